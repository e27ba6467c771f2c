"""GraphQL over the model: a schema generated from views and metrics, rebuilt on reload."""
