"""The dispatcher: compiled chains, firstresult, deadlines, the fault boundary."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import pluggy
import pytest
import trio

import sdk
import sdk.hookspecs
from kernel import dispatch, lograte
from kernel.config.model import KernelSection, PluginPolicy, Settings
from sdk.testing import make_flow
from tests.conftest import basic_config


class Rec:
    def __init__(self, name: str, log: list[str], result: object = None) -> None:
        self.name, self.log, self.result = name, log, result

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> object:
        self.log.append(self.name)
        return self.result


class AsyncRec(Rec):
    @sdk.hookimpl
    async def trellis_request(self, flow: sdk.Flow) -> object:  # type: ignore[override]
        await trio.sleep(0)
        self.log.append(self.name)
        return self.result


def _table(**plugins: object) -> dispatch.HookTable:
    pm = pluggy.PluginManager(sdk.PROJECT)
    pm.add_hookspecs(sdk.hookspecs)
    for name, obj in plugins.items():
        pm.register(obj, name=name)
    return dispatch.collect_impls(pm)


def _settings(**kernel: object) -> Settings:
    return attrs.evolve(Settings(), kernel=KernelSection(**kernel))  # type: ignore[arg-type]


def test_compile_keeps_configured_order_and_drops_duplicates() -> None:
    log: list[str] = []
    inst = {n: Rec(n, log) for n in "abc"}
    chain = dispatch.compile_chain(["c", "a", "c", "b", "a"], _table(**inst), _settings())
    assert chain.names == ("c", "a", "b")
    assert [i.instance for i in chain.request] == ["c", "a", "b"]
    assert chain.response == ()
    assert chain.flow_done == ()


def test_async_body_transform_is_a_config_problem() -> None:
    class Bad:
        @sdk.hookimpl
        async def trellis_response_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> bytes:
            return chunk

    problems: list[str] = []
    chain = dispatch.compile_chain(["bad"], _table(bad=Bad()), _settings(), problems)
    assert chain.response_body == ()
    assert problems == [
        "$.plugins.bad: trellis_response_body must not be async (it is never awaited)"
    ]


async def test_first_result_stops_at_first_non_none_sync_and_async() -> None:
    log: list[str] = []
    resp = sdk.Response.make(204)
    inst = {"a": Rec("a", log), "b": AsyncRec("b", log, resp), "c": Rec("c", log, "never")}
    chain = dispatch.compile_chain(["a", "b", "c"], _table(**inst), _settings())
    assert [i.is_async for i in chain.request] == [False, True, False]
    got = await dispatch.first_result(chain.request, "trellis_request", make_flow())
    assert got is resp
    assert log == ["a", "b"]


class SetsAndRaises:
    """Sets ``flow.response``, then returns ``result`` or raises ``exc``."""

    def __init__(self, result: object = None, exc: BaseException | None = None) -> None:
        self.result, self.exc = result, exc

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> object:
        flow.response = sdk.Response.make(201)
        if self.exc is not None:
            raise self.exc
        return self.result


async def test_first_answer_takes_a_set_response_as_the_result() -> None:
    log: list[str] = []
    table = _table(a=Rec("a", log), sets=SetsAndRaises(), c=Rec("c", log))
    chain = dispatch.compile_chain(["a", "sets", "c"], table, _settings())
    flow = make_flow()
    got = await dispatch.first_answer(chain.request, "trellis_request", flow)
    assert got is flow.response
    assert got.status_code == 201
    assert log == ["a"]  # nothing after the answer
    # first_result (trellis_error's) never looks at flow.response.
    flow = make_flow()
    assert await dispatch.first_result(chain.request, "trellis_request", flow) is None
    assert log == ["a", "a", "c"]


async def test_first_answer_a_returned_response_wins_and_a_failed_call_answers_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mine = sdk.Response.make(202)
    chain = dispatch.compile_chain(["s"], _table(s=SetsAndRaises(mine)), _settings())
    assert await dispatch.first_answer(chain.request, "trellis_request", make_flow()) is mine
    settings = _settings(policy={"s": PluginPolicy(on_error="fail_open")})
    table = _table(s=SetsAndRaises(exc=KeyError("x")), a=Rec("a", []))
    chain = dispatch.compile_chain(["s", "a"], table, settings)
    flow = make_flow()
    with caplog.at_level(logging.ERROR):
        assert await dispatch.first_answer(chain.request, "trellis_request", flow) is None
    assert flow.response is None


class Boom:
    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        raise KeyError("nope")


class Slow:
    @sdk.hookimpl
    async def trellis_request(self, flow: sdk.Flow) -> None:
        await trio.sleep(10)


async def test_fail_closed_raises_plugin_error_with_cause(caplog: pytest.LogCaptureFixture) -> None:
    chain = dispatch.compile_chain(["boom"], _table(boom=Boom()), _settings())
    before = dispatch.plugin_error_counts["boom"]
    with caplog.at_level(logging.ERROR), pytest.raises(sdk.PluginError) as info:
        await dispatch.first_result(chain.request, "trellis_request", make_flow())
    assert info.value.plugin == "boom"
    assert info.value.hook == "trellis_request"
    assert isinstance(info.value.__cause__, KeyError)
    assert dispatch.plugin_error_counts["boom"] == before + 1
    text = caplog.text
    assert "plugin 'boom' raised KeyError in trellis_request" in text
    assert 'raise KeyError("nope")' in text  # the plugin's frame is in the log
    assert "_call(impl" not in text  # the dispatcher's own frame is cut


async def test_fail_open_policy_skips(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    settings = _settings(policy={"boom": PluginPolicy(on_error="fail_open")})
    ok = sdk.Response.make(204)
    table = _table(boom=Boom(), a=Rec("a", log, ok))
    chain = dispatch.compile_chain(["boom", "a"], table, settings)
    with caplog.at_level(logging.ERROR):
        assert await dispatch.first_result(chain.request, "trellis_request", make_flow()) is ok


def test_a_named_instance_takes_over_its_plugins_policy() -> None:
    log: list[str] = []
    settings = _settings(
        plugin_deadline_s=7.0,
        policy={
            "rec": PluginPolicy(deadline_s=2.0),
            "rec.x": PluginPolicy(on_error="fail_open"),
            "rec.z": PluginPolicy(deadline_s=3.0),
        },
    )
    names = ["rec.x", "rec.y", "rec.z", "other"]
    table = _table(**{n: Rec(n, log) for n in names})
    chain = dispatch.compile_chain(names, table, settings)
    got = {i.instance: (i.deadline, i.fail_open) for i in chain.request}
    assert got == {
        "rec.x": (2.0, True),  # its own on_error, its plugin's deadline
        "rec.y": (2.0, False),  # no entry of its own: its plugin's
        "rec.z": (3.0, False),  # its own deadline wins
        "other": (7.0, False),  # the kernel's
    }


class Raiser:
    """Raises what it is given."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        raise self.exc


class AsyncRaiser(Raiser):
    @sdk.hookimpl
    async def trellis_request(self, flow: sdk.Flow) -> None:  # type: ignore[override]
        await trio.sleep(0)
        raise self.exc


def _cancelled() -> trio.Cancelled:
    """A Cancelled as a plugin could raise it (trio makes them privately)."""
    return trio.Cancelled._create()


@pytest.mark.parametrize("is_async", [False, True], ids=["def", "async"])
@pytest.mark.parametrize(
    "exc",
    [SystemExit(3), KeyboardInterrupt(), GeneratorExit(), BaseException("odd")],
    ids=lambda e: type(e).__name__,
)
async def test_a_base_exception_from_a_plugin_fails_only_its_flow(
    exc: BaseException, is_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, anything not an Exception went through and ended the process."""
    plugin = (AsyncRaiser if is_async else Raiser)(exc)
    chain = dispatch.compile_chain(["r"], _table(r=plugin), _settings())
    with caplog.at_level(logging.ERROR), pytest.raises(sdk.PluginError) as info:
        await dispatch.first_result(chain.request, "trellis_request", make_flow())
    assert info.value.__cause__ is exc
    assert f"plugin 'r' raised {type(exc).__name__} in trellis_request" in caplog.text


class _Unprintable(ValueError):
    def __str__(self) -> str:
        raise SystemExit(9)  # the plugin's code too, run by the fault boundary's log line


async def test_an_exception_that_cannot_say_what_it_is_fails_only_its_flow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its ``__str__`` raising SystemExit used to end the process from inside
    the fault boundary (formatting the message and the traceback)."""
    exc = _Unprintable()
    chain = dispatch.compile_chain(["r"], _table(r=Raiser(exc)), _settings())
    with caplog.at_level(logging.ERROR), pytest.raises(sdk.PluginError) as info:
        await dispatch.first_result(chain.request, "trellis_request", make_flow())
    assert info.value.__cause__ is exc
    assert (
        "plugin 'r' raised _Unprintable in trellis_request: <_Unprintable whose str() failed>"
        in caplog.text
    )


async def test_a_cancelled_no_scope_asked_for_is_the_plugins_failure() -> None:
    chain = dispatch.compile_chain(["r"], _table(r=Raiser(_cancelled())), _settings())
    with pytest.raises(sdk.PluginError):
        await dispatch.first_result(chain.request, "trellis_request", make_flow())


async def test_a_real_cancellation_goes_through_the_boundary() -> None:
    chain = dispatch.compile_chain(["slow"], _table(slow=Slow()), _settings())
    with trio.move_on_after(0.05) as scope:
        await dispatch.first_result(chain.request, "trellis_request", make_flow())
    assert scope.cancelled_caught  # a Cancelled, not a PluginError


class OwnTimeout:
    @sdk.hookimpl
    async def trellis_request(self, flow: sdk.Flow) -> None:
        with trio.fail_after(0.1):
            await trio.sleep(1)


async def test_a_plugins_own_timeout_is_not_its_deadline(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.abc.Clock
) -> None:
    """Before, it was logged as "missed its 5s deadline" after 0.1 s."""
    chain = dispatch.compile_chain(["own"], _table(own=OwnTimeout()), _settings())
    with caplog.at_level(logging.ERROR), pytest.raises(sdk.PluginError) as info:
        await dispatch.first_result(chain.request, "trellis_request", make_flow())
    assert "plugin 'own' raised TooSlowError in trellis_request" in caplog.text
    assert "missed its" not in caplog.text
    assert not isinstance(info.value.__cause__, dispatch.DeadlineMissed)


class Wrong:
    """Returns what it is given from every first-result and body hook."""

    def __init__(self, result: object) -> None:
        self.result = result

    @sdk.hookimpl
    def trellis_route_select(self, flow: sdk.Flow) -> object:
        return self.result

    @sdk.hookimpl
    def trellis_upstream_select(self, flow: sdk.Flow) -> object:
        return self.result

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> object:
        return self.result

    @sdk.hookimpl
    def trellis_response_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> object:
        return self.result


@pytest.mark.parametrize(
    ("hook", "result", "want"),
    [
        ("route_select", ["r"], "list, not str"),
        ("upstream_select", "http://a", "str, not Origin"),
        ("request", {"status": 200}, "dict, not Response"),
        ("request", "deny", "str, not Response"),
    ],
)
async def test_a_result_of_the_wrong_type_is_the_plugins_failure(
    hook: str, result: object, want: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the kernel used it and failed later, outside the boundary."""
    chain = dispatch.compile_chain(["w"], _table(w=Wrong(result)), _settings())
    with caplog.at_level(logging.ERROR), pytest.raises(sdk.PluginError) as info:
        await dispatch.first_result(getattr(chain, hook), f"trellis_{hook}", make_flow())
    assert info.value.plugin == "w"
    assert isinstance(info.value.__cause__, TypeError)
    assert want in caplog.text


def test_a_body_transform_must_give_bytes() -> None:
    chain = dispatch.compile_chain(["w"], _table(w=Wrong("text")), _settings())
    with pytest.raises(sdk.PluginError, match="returned str, not bytes"):
        dispatch.transform(chain.response_body, "trellis_response_body", make_flow(), b"x", False)
    chain = dispatch.compile_chain(["w"], _table(w=Wrong(bytearray(b"ok"))), _settings())
    out = dispatch.transform(chain.response_body, "trellis_response_body", make_flow(), b"x", False)
    assert out == b"ok"
    assert type(out) is bytes


async def test_deadline_per_call(autojump_clock: trio.abc.Clock) -> None:
    settings = _settings(policy={"slow": PluginPolicy(deadline_s=0.5)})
    chain = dispatch.compile_chain(["slow"], _table(slow=Slow()), settings)
    start = trio.current_time()
    with pytest.raises(sdk.PluginError, match=r"missed its 0\.5s deadline"):
        await dispatch.first_result(chain.request, "trellis_request", make_flow())
    assert trio.current_time() - start == pytest.approx(0.5)


class Late:
    """Overstays its deadline in one of the ways a cancel scope cannot stop,
    and then answers (which must not count)."""

    def __init__(self, how: str) -> None:
        self.how = how

    async def _late(self) -> sdk.Response:
        if self.how == "swallows":
            try:
                await trio.sleep(10)
            except BaseException:
                pass  # the deadline's Cancelled, caught and dropped
        elif self.how == "catches-cancelled":
            try:
                await trio.sleep(10)
            except trio.Cancelled:
                await trio.sleep(0)  # a checkpoint in a cancelled scope: Cancelled again
        elif self.how == "shields":
            with trio.CancelScope(shield=True):
                await trio.sleep(10)
        else:  # blocks: no checkpoint at all (the clock moves anyway)
            await trio.sleep(0)
            trio.lowlevel.current_clock().jump(10)  # type: ignore[attr-defined]
        return sdk.Response.make(204)

    @sdk.hookimpl
    async def trellis_request(self, flow: sdk.Flow) -> sdk.Response:
        return await self._late()

    @sdk.hookimpl
    async def trellis_flow_done(self, flow: sdk.Flow) -> None:
        await self._late()


LATE = ["swallows", "shields", "blocks"]


@pytest.mark.parametrize("how", LATE)
async def test_a_hook_that_returns_after_its_deadline_missed_it(
    how: str, caplog: pytest.LogCaptureFixture, autojump_clock: trio.abc.Clock
) -> None:
    """Before, a hook that caught its Cancelled, shielded itself or blocked
    past its deadline was a success: its late answer was used."""
    settings = _settings(policy={"late": PluginPolicy(deadline_s=0.5)})
    chain = dispatch.compile_chain(["late"], _table(late=Late(how)), settings)
    before = dispatch.plugin_error_counts["late"]
    with caplog.at_level(logging.ERROR), pytest.raises(sdk.PluginError) as info:
        await dispatch.first_result(chain.request, "trellis_request", make_flow())
    assert isinstance(info.value.__cause__, dispatch.DeadlineMissed)
    assert "plugin 'late' missed its 0.5s deadline in trellis_request" in caplog.text
    assert dispatch.plugin_error_counts["late"] == before + 1


async def test_a_hook_that_catches_cancelled_and_checkpoints_is_cancelled_again(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.abc.Clock
) -> None:
    settings = _settings(policy={"late": PluginPolicy(deadline_s=0.5)})
    chain = dispatch.compile_chain(["late"], _table(late=Late("catches-cancelled")), settings)
    with caplog.at_level(logging.ERROR), pytest.raises(sdk.PluginError, match=r"missed its 0\.5s"):
        await dispatch.first_result(chain.request, "trellis_request", make_flow())


@pytest.mark.parametrize("how", LATE)
async def test_a_terminal_hook_that_returns_after_its_deadline_missed_it(
    how: str, caplog: pytest.LogCaptureFixture, autojump_clock: trio.abc.Clock
) -> None:
    """The same hole in trellis_flow_done (under the exchange's shield)."""
    settings = _settings(policy={"late": PluginPolicy(deadline_s=0.5)})
    chain = dispatch.compile_chain(["late"], _table(late=Late(how)), settings)
    with caplog.at_level(logging.ERROR), trio.CancelScope(shield=True):
        await dispatch.call_done(chain.flow_done, make_flow())
    assert "plugin 'late' missed its 0.5s deadline in trellis_flow_done" in caplog.text


async def test_a_def_hook_whose_awaitable_returns_late_missed_it(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.abc.Clock
) -> None:
    """A plain ``def`` returning an awaitable goes the same way, in
    call_done_sync's hand-over to call_done too."""

    class Hands:
        @sdk.hookimpl
        def trellis_request(self, flow: sdk.Flow) -> object:
            return Late("swallows")._late()

        @sdk.hookimpl
        def trellis_flow_done(self, flow: sdk.Flow) -> object:
            return Late("shields")._late()

    settings = _settings(policy={"h": PluginPolicy(deadline_s=0.5)})
    chain = dispatch.compile_chain(["h"], _table(h=Hands()), settings)
    flow = make_flow()
    with caplog.at_level(logging.ERROR), pytest.raises(sdk.PluginError, match="missed its"):
        await dispatch.first_result(chain.request, "trellis_request", flow)
    start, pending = dispatch.call_done_sync(chain.flow_done, flow)
    assert (start, pending is not None) == (0, True)
    with caplog.at_level(logging.ERROR):
        await dispatch.call_done(chain.flow_done[start:], flow, pending)
    assert "plugin 'h' missed its 0.5s deadline in trellis_flow_done" in caplog.text


async def test_a_hook_done_just_in_time_is_no_miss(autojump_clock: trio.abc.Clock) -> None:
    class InTime:
        @sdk.hookimpl
        async def trellis_request(self, flow: sdk.Flow) -> sdk.Response:
            await trio.sleep(0.49)
            return sdk.Response.make(204)

    settings = _settings(policy={"t": PluginPolicy(deadline_s=0.5)})
    chain = dispatch.compile_chain(["t"], _table(t=InTime()), settings)
    got = await dispatch.first_result(chain.request, "trellis_request", make_flow())
    assert got.status_code == 204


def test_transform_threads_chunks_and_none_keeps() -> None:
    class Upper:
        @sdk.hookimpl
        def trellis_response_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> bytes:
            return chunk.upper()

    class Keep:
        @sdk.hookimpl
        def trellis_response_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> None:
            return None

    class Suffix:
        @sdk.hookimpl
        def trellis_response_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> bytes:
            return chunk + (b"!" if end else b"")

    chain = dispatch.compile_chain(
        ["u", "k", "s"], _table(u=Upper(), k=Keep(), s=Suffix()), _settings()
    )
    flow = make_flow()
    assert dispatch.transform(chain.response_body, "h", flow, b"ab", False) == b"AB"
    assert dispatch.transform(chain.response_body, "h", flow, b"", True) == b"!"


async def test_done_hook_runs_every_impl_even_when_one_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    class Bad:
        @sdk.hookimpl
        def trellis_flow_done(self, flow: sdk.Flow) -> None:
            raise RuntimeError("x")

    class Good:
        @sdk.hookimpl
        def trellis_flow_done(self, flow: sdk.Flow) -> None:
            seen.append(flow.id)

    chain = dispatch.compile_chain(["bad", "good"], _table(bad=Bad(), good=Good()), _settings())
    flow = make_flow()
    with caplog.at_level(logging.ERROR):
        await dispatch.call_done(chain.flow_done, flow)
    assert seen == [flow.id]


async def test_impl_may_take_a_subset_of_the_arguments() -> None:
    class Short:
        @sdk.hookimpl
        def trellis_response_body(self, chunk: bytes) -> bytes:
            return chunk * 2

    chain = dispatch.compile_chain(["s"], _table(s=Short()), _settings())
    assert dispatch.transform(chain.response_body, "h", make_flow(), b"ab", False) == b"abab"


def test_unmarked_methods_are_not_hooks() -> None:
    class Unmarked:
        def trellis_request(self, flow: sdk.Flow) -> None:
            raise AssertionError("never called")

    chain = dispatch.compile_chain(["u"], _table(u=Unmarked()), _settings())
    assert chain.request == ()
    assert chain.names == ("u",)


# ------------------------------------------------------------ the TLS hooks
CHAIN_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY_PEM = b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


class Relay:
    def __init__(self, names: dict[str, sdk.Origin]) -> None:
        self.names = names

    @sdk.hookimpl
    async def trellis_tls_passthrough(
        self, server_name: str, client: sdk.ClientInfo
    ) -> sdk.Origin | None:
        await trio.sleep(0)
        return self.names.get(server_name)


class Certs:
    def __init__(self, names: set[str], fail: bool = False, wrong: bool = False) -> None:
        self.names, self.fail, self.wrong = names, fail, wrong
        self.asked: list[str] = []

    @sdk.hookimpl
    def trellis_tls_certificate(self, server_name: str) -> object:
        self.asked.append(server_name)
        if self.fail:
            raise OSError("disk on fire")
        if self.wrong:
            return (CHAIN_PEM, KEY_PEM)
        if server_name in self.names:
            return sdk.TlsCertificate(CHAIN_PEM, KEY_PEM)
        return None


async def test_connection_first_result_has_no_flow(caplog: pytest.LogCaptureFixture) -> None:
    db = sdk.Origin("tls", "10.0.0.1", 5433)
    table = _table(a=Relay({}), b=Relay({"db.example": db}), boom=Boom())
    chain = dispatch.compile_chain(["a", "b"], table, _settings())
    client = sdk.ClientInfo(address="::1", port=1, listener="main")
    hook = "trellis_tls_passthrough"
    assert (
        await dispatch.connection_first_result(chain.tls_passthrough, hook, "db.example", client)
        == db
    )
    assert await dispatch.connection_first_result(chain.tls_passthrough, hook, "x", client) is None

    class Broken:
        @sdk.hookimpl
        def trellis_tls_passthrough(self, server_name: str) -> None:  # a subset of the arguments
            raise ValueError("nope")

    chain = dispatch.compile_chain(["broken"], _table(broken=Broken()), _settings())
    with caplog.at_level(logging.ERROR), pytest.raises(sdk.PluginError) as info:
        await dispatch.connection_first_result(chain.tls_passthrough, hook, "db.example", client)
    assert info.value.hook == hook
    assert "plugin 'broken' raised ValueError in trellis_tls_passthrough" in caplog.text


def test_certificate_provider_first_result() -> None:
    a, b = Certs({"a.example"}), Certs({"a.example", "b.example"})
    chain = dispatch.compile_chain(["a", "b"], _table(a=a, b=b), _settings())
    provide = dispatch.certificate_provider(chain.tls_certificate)
    assert provide is not None
    assert provide("a.example") == (CHAIN_PEM, KEY_PEM)
    assert provide("b.example") == (CHAIN_PEM, KEY_PEM)
    assert provide("c.example") is None
    assert a.asked == ["a.example", "b.example", "c.example"]
    assert b.asked == ["b.example", "c.example"]
    assert dispatch.certificate_provider(()) is None


def test_certificate_provider_fault_boundary(caplog: pytest.LogCaptureFixture) -> None:
    table = _table(fail=Certs(set(), fail=True), wrong=Certs(set(), wrong=True), ok=Certs({"x"}))
    closed = dispatch.certificate_provider(
        dispatch.compile_chain(["fail", "ok"], table, _settings()).tls_certificate
    )
    assert closed is not None
    with caplog.at_level(logging.ERROR), pytest.raises(sdk.PluginError, match="disk on fire"):
        closed("x")
    wrong = dispatch.certificate_provider(
        dispatch.compile_chain(["wrong"], table, _settings()).tls_certificate
    )
    assert wrong is not None
    with caplog.at_level(logging.ERROR), pytest.raises(sdk.PluginError, match=r"not sdk\.Tls"):
        wrong("x")
    settings = _settings(policy={"fail": PluginPolicy(on_error="fail_open")})
    opened = dispatch.certificate_provider(
        dispatch.compile_chain(["fail", "ok"], table, settings).tls_certificate
    )
    assert opened is not None
    with caplog.at_level(logging.ERROR):
        assert opened("x") == (CHAIN_PEM, KEY_PEM)


def test_async_certificate_hook_is_a_config_problem() -> None:
    class Slow:
        @sdk.hookimpl
        async def trellis_tls_certificate(self, server_name: str) -> None:
            return None

    problems: list[str] = []
    chain = dispatch.compile_chain(["slow"], _table(slow=Slow()), _settings(), problems)
    assert chain.tls_certificate == ()
    assert problems == [
        "$.plugins.slow: trellis_tls_certificate must not be async (it is never awaited)"
    ]


class Answers:
    """Answers every request with ``response`` (as a careless plugin builds one)."""

    def __init__(self, response: sdk.Response) -> None:
        self.response = response

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> sdk.Response:
        return self.response


@pytest.mark.parametrize(
    ("response", "problem"),
    [
        (sdk.Response("200"), "status_code is '200', not 200-599"),  # type: ignore[arg-type]
        (sdk.Response(999), "status_code is 999, not 200-599"),
        (sdk.Response(101), "status_code is 101, not 200-599"),
        (sdk.Response(200, body="text"), "body is str, not bytes"),  # type: ignore[arg-type]
        (sdk.Response(200, reason="h\u00e9llo \u20ac"), "reason 'héllo €' is not Latin-1"),
        (sdk.Response(200, reason="a\r\nb"), "reason 'a\\r\\nb' holds CR, LF or NUL"),
        (sdk.Response(200, headers=None), "headers are NoneType, not sdk.Headers"),  # type: ignore[arg-type]
    ],
    ids=["str-status", "999", "101", "str-body", "reason-not-latin1", "reason-crlf", "no-headers"],
)
async def test_a_response_that_cannot_be_written_is_its_plugins_failure(
    response: sdk.Response, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    """It used to pass the type check (it is a Response) and fail while being
    written: no plugin named, and the client got no answer at all."""
    chain = dispatch.compile_chain(["r"], _table(r=Answers(response)), _settings())
    with caplog.at_level(logging.ERROR), pytest.raises(sdk.PluginError):
        await dispatch.first_result(chain.request, "trellis_request", make_flow())
    said = f"plugin 'r' raised TypeError in trellis_request: returned a Response whose {problem}"
    assert said in caplog.text


class FailsEveryRequest:
    """Raises in ``trellis_request``: ``RuntimeError``, or ``KeyError`` on ``/key``."""

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        if flow.request.path == "/key":
            raise KeyError("other")
        raise RuntimeError("always")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_plugin_failing_every_request_logs_a_burst_then_a_count(
    start_proxy: Any, upstream: Any, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from plugins.builtin.metrics import reset_store
    from tests.plugins.builtin.metrics.support import matching, request, scrape

    clock = _Clock()
    monkeypatch.setattr(lograte, "LIMITER", lograte.RepeatLimiter(clock=clock))
    reset_store()
    cfg = (
        basic_config(upstream.port).replace(
            "[kernel]\n", '[kernel]\nplugins = ["metrics", "fails"]\n'
        )
        + '[[listeners]]\nname = "metrics"\nbind = "127.0.0.4:0"\n'
    )
    app = await start_proxy(cfg, extra_plugins={"fails": FailsEveryRequest()})
    n = 60
    try:
        with caplog.at_level(logging.ERROR, logger="kernel.dispatch"):
            for _ in range(n):
                assert (await request(app.port(), "GET", "/a"))["status"] == 502
            assert (await request(app.port(), "GET", "/key"))["status"] == 502
            raised = [r for r in caplog.records if "plugin 'fails' raised" in r.getMessage()]
            # A bounded number of lines, and a distinct failure is still seen.
            assert len(raised) == lograte.BURST + 1
            assert "raised KeyError" in raised[-1].getMessage()
            assert "Traceback" in raised[0].getMessage()
            clock.now += lograte.WINDOW_S  # the window ends: the next failure reports
            assert (await request(app.port(), "GET", "/a"))["status"] == 502
        got = [r.getMessage() for r in caplog.records if r.name == "kernel.dispatch"]
        assert got[-2] == (
            f"... and {n - lograte.BURST} more like it in the last 10s"
            " (fails trellis_request RuntimeError)"
        )
        assert "plugin 'fails' raised RuntimeError" in got[-1]
        assert len(got) == lograte.BURST + 3
        # Every failure is still counted, logged or not.
        samples = await scrape(("127.0.0.4", app.port("metrics")))
        assert matching(samples, "trellis_plugin_errors_total") == {
            (("hook", "trellis_request"), ("plugin", "fails")): n + 2
        }
    finally:
        reset_store()
