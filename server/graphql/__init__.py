"""GraphQL over the model: a schema generated from views and metrics, rebuilt on reload.

- `build_schema(project, timeout=None)` → a strawberry schema for one model version;
- `graphql_router(runtime)` → a FastAPI router (GraphiQL on GET, operations on POST) that always answers
  with the runtime's current schema: `app.include_router(graphql_router(runtime), prefix="/graphql")`.

Naming conventions are in `server.graphql.names` and docs/graphql.md.
"""

from server.graphql.router import LiveSchema, graphql_router
from server.graphql.schema import build_schema

__all__ = ["LiveSchema", "build_schema", "graphql_router"]
