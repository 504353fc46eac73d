"""Demo hand-off: the demo's sales people share East and West Japan, so hot leads get an owner."""

from __future__ import annotations

from kizuna.accounts.models import User
from kizuna.accounts.roles import Role
from kizuna.handoff.models import HandoffSettings, SalesRoute

EAST = "01,02,03,04,05,06,07,08,09,10,11,12,13,14,15,16,17,19,20,22"


def ensure_demo_routes() -> str:
    if SalesRoute.objects.exists():
        return "sales routes already set"
    sales = list(User.objects.filter(role=Role.SALES, is_active=True).order_by("username"))
    if not sales:
        return "no sales users: no routes"
    HandoffSettings.current()
    half = max(1, len(sales) // 2)
    east = SalesRoute.objects.create(name="東日本", field=SalesRoute.Field.PREFECTURE, values=EAST, position=0)
    east.members.set(sales[:half])
    west = SalesRoute.objects.create(name="西日本・その他", field=SalesRoute.Field.ANY, position=1)
    west.members.set(sales[half:] or sales)
    return f"sales routes: 東日本 ({half} people), 西日本・その他 ({len(sales[half:] or sales)})"
