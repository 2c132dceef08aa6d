"""Query, mutation and subscription resolvers: thin calls into services."""
