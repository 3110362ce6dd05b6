"""auth: users and their password hashes. RPC: register, authenticate, get_user."""
