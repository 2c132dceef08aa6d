"""Use-cases: what Stockgraph does, independent of GraphQL, HTTP and the database."""
