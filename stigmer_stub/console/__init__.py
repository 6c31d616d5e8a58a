"""The web console (docs/console.md): pages, a JSON API and live streams over HTTP, served by
the stub process and reading through the stub's own gRPC API with the viewer's key."""
