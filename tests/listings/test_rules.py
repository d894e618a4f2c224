"""Rules with many inputs, without I/O: the platform fee, the transition tables, the prohibited-items rule, the
wipe-certificate gate and the query analysis."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.kernel.errors import Conflict
from services.listings.domain import model as m
from services.listings.domain.rules import DeviceFacts, ProhibitedItems, wipe_certificate_required
from services.listings.domain.text import contains_all, parse_query, stream
from services.listings.settings import DEFAULT_PROHIBITED_WORDS


@given(amount=st.integers(1, 10**9), bps=st.integers(0, 5000), min_fee=st.integers(0, 10**4))
def test_the_fee_is_half_up_bounded_and_leaves_the_seller_something(amount, bps, min_fee):
    fee = m.platform_fee_fen(amount, bps, min_fee)
    assert 0 <= fee <= amount - 1
    half_up = math.floor(Fraction(amount * bps, 10000) + Fraction(1, 2))
    assert fee == min(max(min_fee, half_up), amount - 1)


def test_fee_examples():
    assert m.platform_fee_fen(4500, 100) == 45
    assert m.platform_fee_fen(150, 100) == 2  # 1.5 → 2 (half-up)
    assert m.platform_fee_fen(149, 100) == 1
    assert m.platform_fee_fen(1, 100, min_fee_fen=50) == 0  # never the whole amount
    assert m.platform_fee_fen(10000, 0) == 0


@given(actions=st.lists(st.sampled_from(sorted(m.ORDER_TRANSITIONS)), max_size=12))
def test_orders_only_move_along_their_edges(actions):
    state = m.PENDING_PAYMENT
    for action in actions:
        try:
            to = m.next_order_state(action, state)
        except Conflict as exc:
            assert exc.extra["current_state"] == state
            assert state not in m.ORDER_TRANSITIONS[action]
            continue
        assert (state, to) in m.ORDER_EDGES
        state = to
    # terminal states never move again
    for terminal in (m.COMPLETED, m.CANCELLED, m.EXPIRED):
        for action in m.ORDER_TRANSITIONS:
            with pytest.raises(Conflict):
                m.next_order_state(action, terminal)


def test_shipping_closes_the_way_back():
    with pytest.raises(Conflict):
        m.next_order_state("cancel", m.SHIPPED)  # after shipping: a refund from escrow, not a cancel
    assert m.next_order_state("refund", m.SHIPPED) == m.CANCELLED
    for state in (m.PENDING_PAYMENT, m.PAID, m.COMPLETED):
        with pytest.raises(Conflict):
            m.next_order_state("refund", state)  # nothing in escrow yet, or released to the seller


def test_prohibited_items_see_through_spacing_and_width():
    rule = ProhibitedItems(frozenset({"hazardous.battery"}), ("仿真枪", "a货"))
    assert rule.check("books.general", "仿 真 枪") is not None
    assert rule.check("books.general", "名牌包 Ａ货") is not None
    assert rule.check("hazardous.battery", "电池").reason == "prohibited_item"
    assert rule.check("books.general", "《枪炮、病菌与钢铁》") is None


# found on the embedded run: 仿\u200b真枪 (a zero-width space), 仿.真.枪, 仿-真-枪 were listed
SPACING = [
    " ",
    "\u3000",
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\u00ad",
    "\ufeff",
    "\ufe0f",
    ".",
    "-",
    "_",
    "*",
    "·",
    "~",
    "/",
]


@given(
    word=st.sampled_from(DEFAULT_PROHIBITED_WORDS),
    data=st.data(),
    before=st.text(st.sampled_from(list("九成新自用出")), max_size=4),
    after=st.text(st.sampled_from(list("九成新自用出")), max_size=4),
)
def test_prohibited_words_see_through_spacing_and_invisible_characters(word, data, before, after):
    gaps = data.draw(
        st.lists(st.text(st.sampled_from(SPACING), max_size=3), min_size=len(word), max_size=len(word))
    )
    hidden = "".join(ch + gap for ch, gap in zip(word, gaps))
    rule = ProhibitedItems(frozenset(), DEFAULT_PROHIBITED_WORDS)
    found = rule.check("books.general", before + hidden + after)
    assert found is not None and found.reason == "prohibited_item", hidden


def test_clause_punctuation_joins_no_words():
    rule = ProhibitedItems(frozenset(), DEFAULT_PROHIBITED_WORDS)
    for text in ("价格高，仿佛全新", "成色好；复，刻录机", "《枪炮、病菌与钢铁》", "银行，卡通图案贴纸"):
        assert rule.check("books.general", text) is None, text


def test_the_wipe_gate():
    need = DeviceFacts(
        names_device=True, category_holds_storage=False, device_keys=("k",), valid_certificates=()
    )
    assert wipe_certificate_required(need).reason == "wipe_certificate_required"
    assert wipe_certificate_required(DeviceFacts(False, True, (), ())).reason == "wipe_certificate_required"
    assert wipe_certificate_required(DeviceFacts(True, True, ("k",), ("wc_1",))) is None
    assert wipe_certificate_required(DeviceFacts(False, False, (), ())) is None


def test_query_analysis():
    assert stream("扫地机器人") == ["扫地", "地机", "机器", "器人"]
    assert stream("Mate40Pro 256G") == ["mate", "40", "pro", "256", "g"]
    terms = parse_query("华为  书 ｉＰｈｏｎｅ")
    assert [t.text for t in terms] == ["华为", "书", "iphone"]
    assert [t.text for t in parse_query("小米 小米 ＭＩ mi")] == ["小米", "mi"]  # a repeated term is one term
    assert terms[1].single_char == "书" and terms[0].is_word
    assert contains_all("华为 Mate 40 手机", "华为 手机") and not contains_all("华为 Mate 40", "华为 手机")


@given(st.text(st.sampled_from(list("华为手机小米苹果电脑书")), min_size=2, max_size=10), st.data())
def test_a_substring_is_always_contained(title, data):
    i = data.draw(st.integers(0, len(title) - 1))
    j = data.draw(st.integers(i + 1, len(title)))
    assert contains_all(title, title[i:j])
