"""The release dashboard's widgets: thin views over :mod:`.data`, :mod:`.charts` and :mod:`.actions`.

One :class:`Dashboard` (an ``ipywidgets.VBox``) with four tabs — pipelines
and approvals, traffic, delivery metrics, one run — and a background thread
that refreshes the live parts (board, approvals, routes) every ``interval``
seconds while runs progress. Every button calls :mod:`.actions`, which goes
through the approvals module's authorization; a refusal is shown, never
swallowed, and changes nothing.
"""
from __future__ import annotations

import html
import json
import threading
import time
from typing import Any, Callable

import ipywidgets as W

from ..errors import WorkbenchError
from . import actions, charts, data, paging, source
from .chartdata import ChartSource

PLOTLY_MIME = "application/vnd.plotly.v1+json"
OK = "#2e7d32"
BAD = "#c62828"


def _say(widget: W.HTML, text: str, colour: str = "#333") -> None:
    widget.value = f'<span style="color:{colour}">{html.escape(text)}</span>'


class ApprovalRow(W.HBox):
    def __init__(self, dash: "Dashboard", p: data.Pending) -> None:
        self.dash = dash
        self.pending = p
        since = p.waiting_since.strftime("%Y-%m-%d %H:%M UTC") if p.waiting_since is not None else "?"
        who = "you may approve" if p.may else html.escape(p.why)
        self.info = W.HTML(f"<b>{html.escape(p.locator)}</b> ({html.escape(p.label)}) waiting since {since}<br>"
                           f"<small>approvers: {html.escape(p.approvers)} — {who}</small>",
                           layout=W.Layout(width="46%"))
        self.comment = W.Text(placeholder="comment (required to reject)", layout=W.Layout(width="24%"))
        self.approve = W.Button(description="Approve", button_style="success", disabled=not p.may,
                                tooltip=p.why or f"approve {p.locator}")
        self.reject = W.Button(description="Reject", button_style="danger", disabled=not p.may,
                               tooltip=p.why or f"reject {p.locator}")
        self.approve.add_class("wb-approve")
        self.reject.add_class("wb-reject")
        self.approve.on_click(lambda _b: dash.act(lambda: self._approve()))
        self.reject.on_click(lambda _b: dash.act(lambda: self._reject()))
        super().__init__([self.info, self.comment, self.approve, self.reject])
        self.add_class("wb-approval")

    def _approve(self) -> str:
        locator = self.pending.locator

        def done(result: Any) -> None:  # the run as it stopped: the page says what really happened
            self.dash.report_outcome(locator, result)
            self.dash.refresh_live()

        run = actions.approve(self.dash.ws, locator, user=self.dash.user, comment=self.comment.value,
                              drive=self.dash.drive, on_done=done)
        return f"approved {locator} as {self.dash.user}; {run['locator']} continues…"

    def _reject(self) -> str:
        actions.reject(self.dash.ws, self.pending.locator, user=self.dash.user, comment=self.comment.value)
        return f"rejected {self.pending.locator} as {self.dash.user}"


def warm_charts(build: Callable[[], None] | None = None) -> threading.Thread:
    """Import plotly in the background while the board shows, then ``build`` the Metrics figure.

    Paid on the first click on Metrics, plotly's imports (1.5-2 s; each trace type loads its validators)
    and six ``FigureWidget``s (each shipping and starting plotly.js, ~5 MB, through the kernel's
    websocket) made the tab take 11-19 s in Chromium (issue 16 defect 10). Now the charts are one
    figure shown as plotly's mime bundle (the page's plotly renderer, a static script, draws it), built
    here in the hidden tab, so the tab is drawn when a person opens it. A tab opened meanwhile waits on
    the dashboard's lock for the same work.
    """

    def work() -> None:
        try:
            import plotly.graph_objects as go

            fig = go.Figure()
            fig.add_trace(go.Scatter(x=[0], y=[0]))
            fig.add_trace(go.Bar(x=[0], y=[0]))
            fig.update_layout(title="warm", xaxis={"title": "x"}, yaxis={"title": "y"}, legend={"orientation": "h"})
            if build is not None:
                build()
        except Exception:  # a warm-up only: the tab reports real errors when it builds its charts
            pass

    t = threading.Thread(target=work, name="wb-warm-charts", daemon=True)
    t.start()
    return t


class RouteRow(W.VBox):
    def __init__(self, dash: "Dashboard", view: data.RouteView) -> None:
        self.dash = dash
        self.view = view
        self.weights = W.HTML()
        self.slider = W.IntSlider(min=0, max=100, step=5, value=view.candidate_weight, continuous_update=False,
                                  description=f"{view.candidate or '-'} %", layout=W.Layout(width="420px"))
        self.move = W.Button(description="Move…", tooltip="choose a weight, then confirm")
        self.reason = W.Text(placeholder="reason (kept in the audit)", layout=W.Layout(width="260px"))
        self.rollback = W.Button(description="Roll back", button_style="danger")
        self.confirm_text = W.HTML()
        self.confirm = W.Button(description="Confirm", button_style="warning")
        self.cancel = W.Button(description="Cancel")
        self.confirm_box = W.HBox([self.confirm_text, self.confirm, self.cancel], layout=W.Layout(display="none"))
        self._pending: tuple[str, Any] | None = None
        self._shown_weight: tuple[Any, int] | None = None  # the (stack, recorded weight) the slider last showed
        for b, cls in ((self.move, "wb-move"), (self.rollback, "wb-rollback"), (self.confirm, "wb-confirm"),
                       (self.cancel, "wb-cancel")):
            b.add_class(cls)
        self.slider.add_class("wb-slider")
        self.move.on_click(lambda _b: self.ask_move())
        self.rollback.on_click(lambda _b: self.ask_rollback())
        self.confirm.on_click(lambda _b: dash.act(self._do))
        self.cancel.on_click(lambda _b: self._hide())
        super().__init__([W.HTML(f"<b>route {html.escape(view.route)}</b>"), self.weights,
                          W.HBox([self.slider, self.move, self.reason, self.rollback]), self.confirm_box])
        self.add_class("wb-route")
        self.show(view)

    def show(self, view: data.RouteView) -> None:
        self.view = view
        bar = "".join(
            f'<span style="display:inline-block;width:{max(w, 0) * 3}px;background:{"#2e9e44" if s == view.live else "#f0ad1e"};'
            f'height:14px"></span>' for s, w in view.weights.items())
        text = " · ".join(f"{html.escape(s)} {w}%{' (live)' if s == view.live else ''}" for s, w in view.weights.items())
        owner = f" — rollout of {html.escape(view.run)}" if view.run else ""
        self.weights.value = f"<div>{bar}</div><small>{text}{owner}</small>"
        # A refresh moves the slider only when the recorded weight itself changed: a person dragging it
        # (before "Move…") keeps what they chose; the label follows the stack a move would now shift.
        shown = (view.candidate, view.candidate_weight)
        if self._pending is None and shown != self._shown_weight:
            self.slider.value = view.candidate_weight
        self._shown_weight = shown
        label = f"{view.candidate or '-'} %"
        if self.slider.description != label:
            self.slider.description = label
        self.rollback.disabled = not view.can_rollback
        self.rollback.tooltip = view.why_not or f"put 100% back on {view.live} for {view.run}"

    def ask_move(self) -> None:
        w = int(self.slider.value)
        self._pending = ("move", w)
        self.confirm_text.value = html.escape(data.move_summary(self.view, w))
        self.confirm_box.layout.display = "flex"

    def ask_rollback(self) -> None:
        if not self.view.can_rollback:
            _say(self.dash.message, self.view.why_not, BAD)
            return
        self._pending = ("rollback", self.view.run)
        self.confirm_text.value = html.escape(f"Roll back {self.view.run}: 100% back on {self.view.live}?")
        self.confirm_box.layout.display = "flex"

    def _hide(self) -> None:
        self._pending = None
        self.confirm_box.layout.display = "none"

    def _do(self) -> str:
        pending, self._pending = self._pending, None
        self.confirm_box.layout.display = "none"
        if pending is None:
            return "nothing to confirm"
        reason = self.reason.value.strip() or None
        if pending[0] == "move":
            weights = actions.set_weights(self.dash.ws, self.view.route, int(pending[1]), user=self.dash.user,
                                          reason=reason)
            return f"route {self.view.route}: " + " ".join(f"{k}={v}%" for k, v in weights.items())
        actions.rollback(self.dash.ws, str(pending[1]), user=self.dash.user, reason=reason)
        return f"{pending[1]} rolled back by {self.dash.user}"


class Dashboard(W.VBox):
    """The release dashboard of one workspace, for one user (the current one by default)."""

    def __init__(self, ws: Any, *, user: str | None = None, interval: float = 2.0, runs_per_pipeline: int = 3,
                 autostart: bool = True, drive: bool = True, charts_on_start: bool = False) -> None:
        from ..identity import current_user

        self.ws = ws
        self.user = user or current_user()
        self.interval = interval
        self.per_pipeline = runs_per_pipeline
        self.drive = drive
        self._lock = threading.RLock()  # the board, approvals and routes
        # the charts' own: building them (seconds at 10,000 pipelines, in the warm-up thread) must not hold up
        # the board's first view or its refresh
        self._charts_lock = threading.RLock()
        self._stop = threading.Event()
        self._closed = False
        self._warming: threading.Thread | None = None
        self._thread: threading.Thread | None = None
        self._routes: dict[str, RouteRow] = {}
        self._approval_rows: dict[str, ApprovalRow] = {}
        self.status = W.HTML()
        self.message = W.HTML()
        self.message.add_class("wb-message")
        self.live = W.ToggleButton(value=autostart, tooltip="refresh while runs progress (click to switch)")
        self._show_live(autostart)
        self.live.observe(lambda ch: (self._show_live(ch["new"]), self.start() if ch["new"] else self.stop()),
                          names="value")
        self.board = W.HTML()
        self.board.add_class("wb-board-html")
        # the board is paged, with a filter and every status's count (paging.py): 10,000 rows cannot be drawn
        self.board_filter = W.Text(placeholder="filter by name (Enter)", continuous_update=False,
                                   layout=W.Layout(width="260px"))
        self.board_filter.add_class("wb-board-filter")
        self.board_group = W.Dropdown(options=[("all groups", None)], value=None, description="group",
                                      layout=W.Layout(width="260px"))
        self.board_group.add_class("wb-board-group")
        self.board_status = W.Dropdown(options=[("any status", None), *((label, key) for key, label in paging.STATUSES)],
                                       value=None, description="status", layout=W.Layout(width="280px"))
        self.board_status.add_class("wb-board-status")
        self.board_prev = W.Button(description="◀ previous", layout=W.Layout(width="110px"))
        self.board_next = W.Button(description="next ▶", layout=W.Layout(width="110px"))
        self.board_prev.add_class("wb-board-prev")
        self.board_next.add_class("wb-board-next")
        self.board_summary = W.HTML()
        self.board_summary.add_class("wb-board-summary")
        self.page_size = paging.PAGE_SIZE
        self.page_number = 1
        self.board_page: paging.Page | None = None
        self._board_key: Any = None  # (store marker, filter, page) the board shows; see refresh_board
        self._quiet = False
        for w in (self.board_filter, self.board_group, self.board_status):
            w.observe(lambda _ch: None if self._quiet else self.show_page(1), names="value")
        self.board_prev.on_click(lambda _b: self.show_page(self.page_number - 1))
        self.board_next.on_click(lambda _b: self.show_page(self.page_number + 1))
        self.board_controls = W.HBox([self.board_filter, self.board_group, self.board_status, self.board_prev,
                                      self.board_next])
        self.approvals = W.VBox()
        self.approvals.add_class("wb-approvals")
        self.routes = W.VBox()
        self.metrics_html = W.HTML()
        self.period = W.Dropdown(options=[("all history", 0), ("last 7 days", 7), ("last 30 days", 30),
                                          ("last 90 days", 90)], value=0, description="period")
        self.freq = W.Dropdown(options=[("day", "D"), ("week", "W"), ("month", "M")], value="W", description="per")
        self.refresh_charts_button = W.Button(description="Refresh charts")
        self.refresh_charts_button.on_click(lambda _b: self.refresh_charts())
        self.figures: dict[str, Any] = {}
        self.metrics_figure: Any = None  # the one figure holding every chart (charts.combine)
        # shown as plotly's mime bundle: JupyterLab's / Voila's plotly renderer (a static, cacheable script)
        # draws it, not a FigureWidget shipping plotly.js through the kernel's websocket (issue 16 defect 10)
        self.metrics_output = W.Output(layout=W.Layout(width="100%"))
        self.metrics_output.add_class("wb-metrics-out")
        self.fit_width = W.HTML(layout=W.Layout(display="none"))  # see _fit_width
        # pressed by the page itself (see _fit_width) when the Metrics tab shows no drawn figure
        self.redraw_button = W.Button(description="redraw charts", layout=W.Layout(display="none"))
        self.redraw_button.add_class("wb-redraw-metrics")
        self.redraw_button.on_click(lambda _b: self._redraw_metrics())
        self._fits = 0
        self.chart_source = ChartSource(ws)  # the charts' data, computed once per store version
        self.runs = W.Dropdown(options=[], description="run", layout=W.Layout(width="520px"))
        self.runs.observe(lambda ch: self.show_run(ch["new"]), names="value")
        self.gantt: Any = None
        self.run_output = W.Output(layout=W.Layout(width="100%"))
        # compare the run shown with another (what changed since: commits, config, results, artifacts)
        self.compare_with = W.Dropdown(options=[("—", None)], value=None, description="compare with",
                                       layout=W.Layout(width="620px"), style={"description_width": "initial"})
        self.compare_with.observe(lambda _ch: self.show_compare(), names="value")
        self.compare_html = W.HTML()
        self.compare_html.add_class("wb-compare-html")
        self.stream: Any = None
        header = W.HBox([W.HTML("<h3 style='margin:4px 12px 4px 0'>Release dashboard</h3>"),
                         W.HTML(f"signed in as <b>{html.escape(self.user)}</b>&nbsp;&nbsp;"), self.live, self.status])
        self.chart_box = W.VBox()
        metrics_tab = W.VBox([W.HBox([self.period, self.freq, self.refresh_charts_button]), self.metrics_html,
                              self.chart_box, self.fit_width, self.redraw_button])
        metrics_tab.add_class("wb-metrics-tab")
        self.run_box = W.VBox([self.runs])
        tabs = W.Tab(children=[
            W.VBox([self.board_controls, self.board_summary, self.board, W.HTML("<h4>Waiting for approval</h4>"),
                    self.approvals]),
            self.routes,
            metrics_tab,
            self.run_box,
        ])
        for i, t in enumerate(("Pipelines", "Traffic", "Metrics", "Run")):
            tabs.set_title(i, t)
        self.tabs = tabs
        # charts and the run view cost seconds (plotly's widget bundle): built when first looked at
        tabs.observe(self._on_tab, names="selected_index")
        super().__init__([header, self.message, tabs])
        self.add_class("wb-dashboard")
        self._counting = autostart and not charts_on_start
        if self._counting:
            # the first view at once (page 1 of every pipeline needs no count); the live thread counts them,
            # then warms the charts up: both cost seconds at 10,000 pipelines and would hold up the page
            self._first_page()
        else:
            self.refresh_live()
            if charts_on_start:
                self.refresh_charts()
                self._fill_runs()
            else:
                self._warming = warm_charts(self._warm_up)
        if autostart:
            self.start()

    # -- actions ----------------------------------------------------------------------
    def act(self, fn: Callable[[], str]) -> bool:
        """Run a button's action: success or the workbench's own error message, then refresh."""
        try:
            text = fn()
        except WorkbenchError as exc:
            _say(self.message, str(exc), BAD)
            ok = False
        else:
            _say(self.message, text, OK)
            ok = True
        self.refresh_live()
        return ok

    def _show_live(self, on: bool) -> None:
        """The toggle says its state in words and colour: "live: on" (green) or "live: off"."""
        self.live.description = "live: on" if on else "live: off"
        self.live.button_style = "success" if on else ""
        self.live.icon = "refresh" if on else "pause"

    def report_outcome(self, locator: str, result: Any) -> None:
        """After an approval, the run's real outcome replaces "approved": red with the reason when a stage
        failed (e.g. the traffic provider's message), neutral when it waits again, green when it passed."""
        done = f"approved {locator} as {self.user}"
        if isinstance(result, BaseException):
            _say(self.message, f"{done}, but the run could not go on: {result}", BAD)
            return
        status = getattr(result, "status", None)
        value = getattr(status, "value", str(status))
        why = f": {result.reason}" if getattr(result, "reason", None) else ""
        if value in ("failed", "cancelled", "rejected"):
            _say(self.message, f"{done}; then {result.locator} {value}{why}", BAD)
        elif value == "passed":
            _say(self.message, f"{done}; {result.locator} passed", OK)
        elif value == "waiting":
            _say(self.message, f"{done}; {result.locator} waits for the next approval", OK)

    # -- live refresh --------------------------------------------------------------------
    def refresh_live(self) -> None:
        """Board, approvals and routes from the store; the board's page is read again only when the store changed."""
        with self._lock:
            before = (self.board.value, self.board_summary.value, self.approvals.children, self.routes.children,
                      self._route_values())
            self.refresh_board()
            self._refresh_approvals()
            self._refresh_routes()
            # the status only changes with the data: an unwatched page's kernel then goes quiet
            # and Voila can cull it (see cli/dashboard.py)
            if before != (self.board.value, self.board_summary.value, self.approvals.children, self.routes.children,
                          self._route_values()) or not self.status.value:
                _say(self.status, f"last change {time.strftime('%H:%M:%S')}")

    def board_filter_value(self) -> paging.BoardFilter:
        return paging.BoardFilter(self.board_filter.value.strip(), self.board_group.value, self.board_status.value)

    def show_page(self, number: int) -> None:
        """Page ``number`` of the pipelines the filter matches (a filter change starts again at page 1)."""
        with self._lock:
            self.page_number = max(1, int(number))
            self.refresh_board()

    def refresh_board(self) -> None:
        """The page of the board shown, its counts and the filter's choices.

        Keyed on the store's change marker (``Store.change_marker``; None on PostgreSQL: always read): while
        nothing was written and the filter and page are the same, nothing is read or sent. After a write the
        pipelines already shown are read again first (their last ``runs_per_pipeline`` runs: a few
        milliseconds whatever the estate's size), so a stage that changed on the page shows at once; then
        the index and the counts come from ``reads.board`` (the application layer's board, cached on the
        marker and shared with the CLI and the server) and the page is drawn again only if the pipelines on
        it changed. A widget's value is set only when it differs, so the page is sent only what changed.
        """
        from ..service import reads

        marker = self.ws.store.change_marker()
        flt = self.board_filter_value()
        cfg = self.ws.config
        key = (marker, flt, self.page_number, self.page_size, id(cfg))
        if marker is not None and key == self._board_key:
            return
        old = self._board_key
        if self.board_page is not None and old is not None and old[1:] == key[1:]:
            self._draw_page(self.board_page.names(), cfg)  # only the store changed: the page first
        entries = paging.index(reads.board(self.ws))
        p = paging.page(entries, flt, self.page_number, self.page_size)
        drawn = self.board_page.names() if self.board_page is not None and old is not None \
            and old[1:] == key[1:] else None
        self.page_number, self.board_page = p.number, p
        if p.names() != drawn:
            self._draw_page(p.names(), cfg)
        text = html.escape(paging.summary(p))
        if self.board_summary.value != text:
            self.board_summary.value = text
        self.board_prev.disabled = p.number <= 1
        self.board_next.disabled = p.number >= p.pages
        options = [("all groups", None), *((g or "(no group)", g) for g in p.groups)]
        if list(self.board_group.options) != options:
            chosen = self.board_group.value
            self._quiet = True  # setting options resets the value (and would start again at page 1)
            try:
                self.board_group.options = options
                if any(v == chosen for _, v in options):
                    self.board_group.value = chosen
            finally:
                self._quiet = False
            if self.board_group.value != chosen:  # the group chosen is gone: show every group
                return self.refresh_board()
        self._board_key = (marker, flt, p.number, self.page_size, id(cfg))

    def _draw_page(self, names: list[str], cfg: Any) -> None:
        """The board's rows of ``names``: their last runs, stage by stage (GoCD's cells), pauses and warnings."""
        runs, stages = source.latest_runs(self.ws.store, self.per_pipeline, pipelines=names)
        shown_layout, groups = source.layout(cfg, names)
        from ..pauses import current_pauses

        paused = {n: held.describe() for n, held in current_pauses(self.ws.store).items() if n in shown_layout}
        board = data.board_html(data.board(runs, stages, shown_layout, groups), paused)
        from ..configrepos.compose import describe
        from ..reporting import config_repo_lines

        board = data.warnings_html(config_repo_lines(describe(self.ws))) + board
        if self.board.value != board:
            self.board.value = board

    def _route_values(self) -> tuple[Any, ...]:
        return tuple((r.weights.value, r.rollback.disabled) for r in self._routes.values())

    def _refresh_approvals(self) -> None:
        from ..approvals import pending_approvals

        rows = data.approvals_for(pending_approvals(self.ws), self.user,
                                  lambda p: actions.may_approve(self.ws, p["locator"], self.user))
        keep = {}
        for p in rows:
            row = self._approval_rows.get(p.locator)
            keep[p.locator] = row if row is not None and row.pending == p else ApprovalRow(self, p)
        changed = list(keep) != list(self._approval_rows) or any(keep[k] is not self._approval_rows.get(k) for k in keep)
        if changed or not self.approvals.children:
            self._approval_rows = keep
            self.approvals.children = list(keep.values()) or [W.HTML("<i>nothing is waiting for approval</i>")]

    def _refresh_routes(self) -> None:
        try:
            from ..traffic import route_status
        except ImportError:
            return
        status = route_status(self.ws)
        if not status:
            if not self.routes.children:
                self.routes.children = [W.HTML("<i>no routes are configured (routes: in the pipeline files)</i>")]
            return
        frames = self.ws.frames
        views = data.route_views(status, frames.traffic, frames.rollbacks)
        for v in views:
            row = self._routes.get(v.route)
            if row is None:
                self._routes[v.route] = RouteRow(self, v)
            else:
                row.show(v)
        if len(self.routes.children) != len(self._routes):
            self.routes.children = list(self._routes.values())

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="wb-dashboard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _first_page(self) -> None:
        """Page 1 of the unfiltered board (the config's first pipelines), approvals and routes; the counts follow."""
        import itertools

        with self._lock:
            cfg = self.ws.config
            self._draw_page(list(itertools.islice(cfg.pipelines, self.page_size)), cfg)
            _say(self.board_summary, f"{len(cfg.pipelines):,} pipelines — counting them by status…")
            self.board_prev.disabled = True
            self.board_next.disabled = len(cfg.pipelines) <= self.page_size
            self._refresh_approvals()
            self._refresh_routes()

    def _loop(self) -> None:
        if self._counting:
            self._counting = False
            try:
                self.refresh_live()
            except Exception as exc:  # noqa: BLE001  shown, and tried again on the next refresh
                _say(self.status, f"refresh failed: {exc}", BAD)
            if self._warming is None and not self._closed:
                self._warming = warm_charts(self._warm_up)
        while not self._stop.wait(self.interval):
            try:
                self.refresh_live()
            except Exception as exc:  # a locked store or a config being edited: say so, keep going
                _say(self.status, f"refresh failed: {exc}", BAD)

    def close(self) -> None:
        self._closed = True
        self.stop()
        self.chart_source.close()
        super().close()

    # -- charts and one run -----------------------------------------------------------------
    def _metrics(self) -> Any:
        return self.chart_source.metrics(self.period.value)

    def _ensure_charts_quietly(self) -> None:
        """The warm-up's build: a failure is shown (and the tab tries again when opened), never lost."""
        try:
            self.ensure_charts()
        except Exception as exc:  # noqa: BLE001  (a thread's exception would vanish)
            _say(self.message, f"the charts could not be built yet: {exc}", BAD)

    def _warm_up(self) -> None:
        """The warm-up thread's work: the Metrics figure, then the Run tab's first use."""
        self._ensure_charts_quietly()
        if not self._closed:
            self._warm_run_view()

    def _warm_run_view(self) -> None:
        """Build (and drop) the newest run's two figures, as the Run tab will: its first use paid plotly's
        figure code and JSON encoder (~0.6 s at 1,000 pipelines) on the click. Nothing is shown or kept here
        but :class:`ChartSource`'s own per-run frames, keyed on the store's version: the tab reads the runs when
        it opens, so what it shows is as current as without this."""
        try:
            newest = source.recent_runs(self.ws.store, limit=1)
            if newest:
                run_id = newest[0][1]
                g = charts.gantt_figure(self.chart_source.gantt(run_id), "warm")
                vs = charts.value_stream_figure(*self.chart_source.value_stream(run_id), "warm")
                for f in (g, vs):
                    _plotly_output(f, "warm")
        except Exception:  # noqa: BLE001  a warm-up only: the tab reports real errors when it draws the run
            pass

    def ensure_charts(self) -> None:
        """The Metrics figure, built once (by the warm-up thread or the first look at the tab, whichever is first)."""
        with self._charts_lock:
            if self.metrics_figure is None and not self._closed:
                self.refresh_charts()

    def _redraw_metrics(self) -> None:
        """Send the Metrics tab's state again: the page found the tab showing and no drawn figure (_fit_width).

        Seen about one page in seven: the tab stayed empty (no figure, not even the summary) although the kernel
        had built it, or showed the bundle's text/plain because the warm-up thread set the figure before the
        page's plotly renderer (a labextension Voila loads asynchronously) was registered. Re-sending the
        state from the kernel's own thread, outputs set afresh, has the page render them with the renderers it
        has by now. Only on the page's request: sending the figure again on every show cost ~0.7 s a show.
        """
        self.ensure_charts()
        with self._charts_lock:  # not between a live refresh's new figure and the old one sent again
            outputs = tuple(self.metrics_output.outputs)
            if outputs:
                self.metrics_output.outputs = ()
                self.metrics_output.outputs = outputs
            if self.metrics_output not in self.chart_box.children:
                self.chart_box.children = [self.metrics_output]
            for w in (self.metrics_html, self.chart_box, self.metrics_output):
                w.send_state()

    def _fit_width(self) -> None:
        """Have plotly.js size the figure to its box once the tab shows: drawn while the tab was hidden its box
        measured 0, and a figure kept at plotly's default 700 px left a 1920 px screen two-thirds empty. A
        browser ``resize`` event 50 ms after the tab shows makes plotly measure its box again (an inline
        ``onerror`` runs where a ``<script>`` in an HTML widget would not); the counter makes each show new.
        While the tab shows no drawn plotly chart, the page presses the hidden redraw button every 2 s
        (:meth:`_redraw_metrics`).
        """
        self._fits += 1
        # every 2 s while the Metrics tab shows without a drawn chart (at most 10 times): ask the kernel again
        check = ("var n=0,t=setInterval(function(){var tab=document.querySelector('.wb-metrics-tab');"
                 "if(!tab||!tab.offsetWidth||document.querySelector('.wb-metrics-out .js-plotly-plot')||++n>10)"
                 "{clearInterval(t);return;}var b=document.querySelector('.wb-redraw-metrics');if(b)b.click();},2000)")
        self.fit_width.value = (f'<img alt="" src="data:," style="display:none" data-fit="{self._fits}" '
                                "onerror=\"setTimeout(function(){window.dispatchEvent(new Event('resize'))},50);"
                                f'{check}">')

    def refresh_charts(self) -> None:
        """The six charts as ONE figure (``charts.combine``) in one Output: six FigureWidgets each paid
        plotly.js's shipping and start-up, ~11 s in Chromium (issue 16 defect 10)."""
        with self._charts_lock:
            days, freq = self.period.value, self.freq.value
            m = self._metrics()
            parts = charts.metrics_figures(self.chart_source.all(days, freq))
            fig = charts.combine(parts)
            self.figures = parts  # the separate figures, for a notebook that wants one of them alone
            self.metrics_figure = fig
            # set as the Output's state, not printed inside ``with output:``: a print routes by the message being
            # handled, and the warm-up thread handles none (its output was lost)
            self.metrics_output.outputs = (_plotly_output(fig, "the Metrics tab's charts"),)
            self.metrics_html.value = summary_html(m)
            if not self.chart_box.children:
                self.chart_box.children = [self.metrics_output]

    def _on_tab(self, change: dict[str, Any]) -> None:
        try:
            if change["new"] == 2:
                self.ensure_charts()
                self._fit_width()
            elif change["new"] == 3 and not self.runs.options:
                self._fill_runs()
        except WorkbenchError as exc:
            _say(self.message, str(exc), BAD)

    def show_compare(self) -> None:
        """The run shown (B) against the one chosen in "compare with" (A), as ``workbench compare A B``."""
        a, b = self.compare_with.value, self.runs.value
        if a is None or b is None:
            self.compare_html.value = ""
            return
        from ..compare import as_html
        from ..service import reads

        loc = {rid: self.ws.store.get_pipeline_run_by_id(rid) for rid in (a, b)}
        try:
            result = reads.compare(self.ws, *(f"{loc[r].pipeline}/{loc[r].counter}" for r in (a, b)))
        except WorkbenchError as exc:
            _say(self.compare_html, str(exc), BAD)
            return
        self.compare_html.value = as_html(result)

    def _fill_runs(self) -> None:
        options = source.recent_runs(self.ws.store)
        self.compare_with.options = [("—", None), *options]
        self.runs.options = options
        if options and self.runs.value is None:
            self.runs.value = options[0][1]

    def show_run(self, run_id: int | None) -> None:
        """One run's Gantt and value stream, as plotly mime bundles in one Output (no FigureWidget: each
        shipped plotly.js through the kernel and, drawn in a tab not yet shown, sometimes stayed empty)."""
        if run_id is None:
            return
        g = charts.gantt_figure(self.chart_source.gantt(int(run_id)), "Stages and jobs")
        n, e = self.chart_source.value_stream(int(run_id))
        vs = charts.value_stream_figure(n, e, "Value stream: commits → runs → deployments")
        self.gantt, self.stream = g, vs
        self.run_output.outputs = tuple(_plotly_output(f, t) for f, t in ((g, "the run's stages and jobs"),
                                                                           (vs, "the run's value stream")))
        self.run_box.children = [self.runs, self.run_output, self.compare_with, self.compare_html]
        self.show_compare()


def _plotly_output(fig: Any, text: str) -> dict[str, Any]:
    """An Output widget's display_data of a figure: drawn by the page's plotly renderer (JupyterLab, Voila)."""
    return {"output_type": "display_data", "data": {PLOTLY_MIME: json.loads(fig.to_json()), "text/plain": text},
            "metadata": {}}


def summary_html(m: Any) -> str:
    """The DORA five with their bands, as a small table."""
    s = m.summary
    if s.empty:
        return "<i>no data</i>"
    r = s.iloc[0]

    def td(v: Any) -> str:
        import pandas as pd

        if v is None or v is pd.NaT or (isinstance(v, float) and v != v):
            return "–"
        if isinstance(v, pd.Timedelta):
            return charts._short(v.total_seconds())
        if isinstance(v, float):
            return f"{v:.2f}"
        return html.escape(str(v))

    rows = [
        ("Deployment frequency", f"{td(r['deployments'])} deployments, {td(r['per_week'])}/week on average; "
         f"Four Keys bucket <i>{td(r['frequency_bucket'])}</i> (from the median week's deploy days)",
         r["deployment_frequency_band"]),
        ("Change lead time", f"median {td(r['lead_time_median'])}, p90 {td(r['lead_time_p90'])} ({td(r['commits'])} commits)",
         r["lead_time_band"]),
        ("Change fail rate", f"{r['change_fail_rate']:.0%}" if r["change_fail_rate"] == r["change_fail_rate"] else "–",
         r["change_fail_rate_band"]),
        ("Failed deployment recovery", f"median {td(r['recovery_median'])} ({td(r['unrecovered'])} unrecovered)",
         r["recovery_band"]),
        ("Deployment rework rate", f"{r['rework_rate']:.0%}" if r["rework_rate"] == r["rework_rate"] else "–", None),
    ]
    body = "".join(f"<tr><td>{a}</td><td>{b}</td><td><b>{td(c) if c else '–'}</b></td></tr>" for a, b, c in rows)
    return ("<table class='wb-dora' style='font-size:13px'><tr><th>metric</th><th>value</th><th>DORA 2024 band</th></tr>"
            f"{body}</table>")
