"""The HTTP layer: the server and what every route does around its handler, the routes
(public, admin, call-backs, proof), the pages people read, `/metrics`. It parses requests,
calls the service and renders the answers; the decisions are the service's."""
