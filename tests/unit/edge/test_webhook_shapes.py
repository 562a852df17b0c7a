"""The shapes the edge checks before any gRPC call: webhook tokens and TradingView layout ids."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge.webhooks import CHART_SHAPE, TOKEN_SHAPE
from signal_service.users.tokens import generate_token, looks_like_token

LAYOUT_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


def test_every_issued_token_has_the_shape_the_edge_lets_through() -> None:
    for _ in range(500):
        assert TOKEN_SHAPE.fullmatch(generate_token())


@given(st.text(max_size=80))
def test_the_edge_and_the_signal_service_agree_on_what_can_be_a_token(candidate: str) -> None:
    assert (TOKEN_SHAPE.fullmatch(candidate) is not None) == looks_like_token(candidate)


@given(st.text(alphabet=LAYOUT_ID_ALPHABET, min_size=1, max_size=64))
def test_layout_ids_are_taken(chart: str) -> None:
    assert CHART_SHAPE.fullmatch(chart)


@given(st.text(min_size=1, max_size=200))
def test_anything_else_is_not_a_layout_id(chart: str) -> None:
    is_layout_id = len(chart) <= 64 and all(character in LAYOUT_ID_ALPHABET for character in chart)
    assert (CHART_SHAPE.fullmatch(chart) is not None) == is_layout_id
