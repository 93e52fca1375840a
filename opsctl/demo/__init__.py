"""The demo app: a simulated multi-tenant time tracker that ``opsctl up --demo`` runs."""
