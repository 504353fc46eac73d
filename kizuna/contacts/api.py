"""REST API for contacts, companies, custom fields and imports (to be filled)."""

from ninja import Router

router = Router()
