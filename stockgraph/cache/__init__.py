"""Fast copies of what the database holds; losing them loses nothing."""
