"""The HTTP gateway of KnowledgeNest: gateway.service.GatewayService (nameko name "gateway")."""
