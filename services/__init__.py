"""KnowledgeNest services: one package per service, and the shared event kit in ``services.kit``."""
