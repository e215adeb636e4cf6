"""@rate_limited and RateLimit on FastAPI endpoints under postponed annotations (PEP 563).

With ``from __future__ import annotations`` FastAPI resolves the string annotations
in the endpoint's own module: the decorator must leave that module reachable.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel

from sergas_guard.fastapi import RateLimit, install_exception_handlers
from sergas_guard.ratelimit import rate_limited
from sergas_guard.web import api_key
from tests.web.conftest import asgi_client


class Order(BaseModel):
    sku: str
    quantity: int


class Settings(BaseModel):
    currency: str = "EUR"


def settings() -> Settings:
    return Settings()


app = FastAPI()
install_exception_handlers(app)


@app.post("/orders/{shop}")
@rate_limited("2/minute", key=api_key())
async def place(
    shop: str,
    order: Order,
    config: Annotated[Settings, Depends(settings)],
    note: Annotated[str, Query(max_length=10)] = "",
) -> dict[str, object]:
    return {"shop": shop, "sku": order.sku, "currency": config.currency, "note": note}


@app.get("/quote", dependencies=[Depends(RateLimit("1/minute"))])
def quote(amount: int) -> dict[str, int]:
    return {"amount": amount}


async def test_postponed_annotations_body_query_and_depends_still_work() -> None:
    async with asgi_client(app) as client:
        order = {"sku": "A1", "quantity": 2}
        ok = await client.post("/orders/main", json=order, params={"note": "hi"},
                               headers={"x-api-key": "k1"})  # fmt: skip
        too_long = await client.post("/orders/main", json=order, params={"note": "x" * 11})
        other_key = await client.post("/orders/main", json=order, headers={"x-api-key": "k2"})
        again = await client.post("/orders/main", json=order, headers={"x-api-key": "k1"})
        over = await client.post("/orders/main", json=order, headers={"x-api-key": "k1"})
    assert ok.status_code == 200
    assert ok.json() == {"shop": "main", "sku": "A1", "currency": "EUR", "note": "hi"}
    assert too_long.status_code == 422
    assert [other_key.status_code, again.status_code, over.status_code] == [200, 200, 429]


async def test_postponed_annotations_dependency_on_sync_endpoint() -> None:
    async with asgi_client(app) as client:
        first = await client.get("/quote", params={"amount": 3})
        second = await client.get("/quote", params={"amount": 3})
    assert first.json() == {"amount": 3}
    assert second.status_code == 429
