"""A streamed body stays streamed under either server (ttportal/streaming.py): WSGI gets
the iterable as it is, ASGI an asynchronous one pulling an item at a time, never the
whole iterable read into a list first, and its close runs when the response ends."""

from __future__ import annotations

import warnings

from asgiref.sync import async_to_sync
from django.http import StreamingHttpResponse
from django.test import AsyncRequestFactory, RequestFactory

from ttportal.streaming import body_for


def _items(pulled: list, closed: list):
    try:
        for item in (b"a", b"b", b"c"):
            pulled.append(item)
            yield item
    finally:
        closed.append(True)


def test_under_wsgi_the_iterable_is_served_as_it_is():
    items = _items([], [])
    assert body_for(RequestFactory().get("/"), items) is items


def test_under_asgi_it_is_pulled_one_item_at_a_time_and_closed_when_the_response_ends():
    pulled, closed = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Django warns when it must read a whole iterator first
        response = StreamingHttpResponse(body_for(AsyncRequestFactory().get("/"), _items(pulled, closed)))
        assert response.is_async

        async def first():
            async for item in response:
                return item

        assert async_to_sync(first)() == b"a"
    assert pulled == [b"a"]  # the rest was never read
    response.close()  # what Django's ASGI handler does once the client has gone
    assert closed == [True]
