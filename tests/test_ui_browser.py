"""The MLflow UI as a SharingHub project page, seen in a real Chromium.

Each caller (a developer and a reporter of eo/flood-model, an anonymous
visitor of public/demo-model on the default-token server) opens the home page
and the UI's pages on objects made with the MLflow client; every page is
screenshotted (``test-artifacts/ui-*.png``). Other projects hold objects with
distinctive names: neither the page nor any response it loaded may name them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
import pandas as pd
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Response, expect

from browser import chromium, screenshot_path
from servers import CROPS, DEMO, FLOOD, Server, Standin, as_user, unique

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

PROJECT_IDS = {FLOOD: 42, CROPS: 43, DEMO: 45}
PROJECT_NAMES = {FLOOD: "Flood Model", CROPS: "Crop Classifier", DEMO: "Demo Model"}
# What this server does not offer, as MLflow's UI would name it.
REFUSED_FEATURES = re.compile(
    r"\bWorkspaces?\b|new workspace|AI Gateway|MCP|Assistant|\bJobs\b"
)
# Read through Playwright: what the page's own scripts and data are made of.
READ_BODIES = ("json", "html", "javascript", "text/plain", "css")


class Doubler(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: Any = None
    ) -> Any:
        return model_input * 2


@dataclass(frozen=True)
class Objects:
    """What one project holds: its identifiers, to open or to look for."""

    project: str
    experiment_id: str
    experiment_name: str
    run_id: str
    run_name: str
    logged_model_id: str
    model_name: str
    version: str

    def identifiers(self) -> list[str]:
        """Strings that name this project or its objects, and nothing else."""
        project_id = PROJECT_IDS[self.project]
        return [
            self.project,
            PROJECT_NAMES[self.project],
            f"p-{project_id}",
            self.experiment_name,
            self.run_id,
            self.run_name,
            self.logged_model_id,
            self.model_name,
        ]


def populate(uri: str, token: str, project: str, tmp_path: Path) -> Objects:
    """An experiment, a run with metrics and files, a logged and registered model."""
    label = project.rsplit("/", 1)[1]
    with as_user(uri, token):
        experiment_name = unique(f"{label}-experiment")
        experiment_id = mlflow.create_experiment(experiment_name)
        run_name = unique(f"{label}-run")
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            mlflow.log_param("alpha", "0.5")
            for step in range(3):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            notes = tmp_path / "notes.txt"
            notes.write_text(f"notes of {label}")
            mlflow.log_artifact(str(notes))
            logged = mlflow.pyfunc.log_model(
                name="model", python_model=Doubler(), pip_requirements=[]
            )
        model_name = unique(f"{label}-model")
        version = mlflow.register_model(logged.model_uri, model_name)
    return Objects(
        project=project,
        experiment_id=experiment_id,
        experiment_name=experiment_name,
        run_id=run.info.run_id,
        run_name=run_name,
        logged_model_id=logged.model_id,
        model_name=model_name,
        version=str(version.version),
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as instance:
        yield instance


@pytest.fixture(scope="module")
def objects(
    request: pytest.FixtureRequest,
    standin: Standin,
    backend: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, str], Objects]:
    """Objects in every project of both servers, keyed by (server, project)."""
    demo_writer = unique("demo-dev")
    standin.put_user(demo_writer, {PROJECT_IDS[DEMO]: 3})
    writers = {FLOOD: "dev-a", CROPS: "dev-b", DEMO: demo_writer}
    made = {}
    for fixture, projects in (
        ("server", (FLOOD, CROPS)),
        ("open_server", (CROPS, DEMO)),
    ):
        instance: Server = request.getfixturevalue(fixture)
        for project in projects:
            folder = tmp_path_factory.mktemp("objects")
            made[fixture, project] = populate(
                instance.uri(project), writers[project], project, folder
            )
    return made


@dataclass(frozen=True)
class Caller:
    """Who opens the UI, on which server and project, and what they may do."""

    token: str | None
    server: str
    project: str
    read_only: bool


CALLERS = {
    "developer": Caller("dev-a", "server", FLOOD, read_only=False),
    "reporter": Caller("rep-a", "server", FLOOD, read_only=True),
    "anonymous": Caller(None, "open_server", DEMO, read_only=True),
}


class Visit:
    """One browser context and what its pages received from a server.

    A response's body is gone once its page is left, so ``keep`` reads the
    bodies received so far; it runs on each screenshot and before leaving.
    """

    def __init__(self, context: BrowserContext, server: Server) -> None:
        self.context = context
        self.server = server
        self.page = context.new_page()
        self.responses: list[Response] = []
        self.bodies: dict[str, str] = {}
        self.page.on("response", lambda response: self.responses.append(response))

    def log_in(self, token: str) -> None:
        """Through the home page's link and SharingHub's (stand-in) login form."""
        self.page.goto(self.server.url + "/")
        self.keep()
        self.page.get_by_role("link", name="Log in with SharingHub").click()
        self.page.get_by_label("GitLab token").fill(token)
        self.page.get_by_role("button", name="Sign in", exact=True).click()
        self.page.wait_for_url(self.server.url + "/")
        self.keep()

    def shoot(self, name: str) -> None:
        """A screenshot of the page once its requests are done."""
        self.page.wait_for_load_state("networkidle")
        self.page.screenshot(path=screenshot_path(name))
        self.keep()

    def keep(self) -> None:
        """Reads the bodies of the server's responses that a page could read."""
        origin = urlsplit(self.server.url).netloc
        for response in self.responses:
            kind = response.headers.get("content-type", "")
            if urlsplit(response.url).netloc != origin or response.url in self.bodies:
                continue
            if 300 <= response.status < 400:
                continue
            if any(name in kind for name in READ_BODIES):
                self.bodies[response.url] = response.text()
        self.responses.clear()


@pytest.fixture
def visit(
    request: pytest.FixtureRequest, browser: Browser, caller: Caller
) -> Iterator[Visit]:
    server: Server = request.getfixturevalue(caller.server)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        session = Visit(context, server)
        if caller.token is not None:
            session.log_in(caller.token)
        yield session
    finally:
        context.close()


@pytest.fixture(params=CALLERS.values(), ids=CALLERS.keys())
def caller(request: pytest.FixtureRequest) -> Caller:
    chosen: Caller = request.param
    return chosen


def shoot(page: Page, name: str) -> None:
    page.wait_for_load_state("networkidle")
    page.screenshot(path=screenshot_path(name))


def dismiss_promotion(page: Page) -> None:
    """Closes MLflow's one-time promotion of its new registry UI, if shown."""
    promotion = page.get_by_role("dialog")
    if promotion.count():
        page.keyboard.press("Escape")
        expect(promotion).to_have_count(0)


def ui_pages(own: Objects) -> dict[str, tuple[str, str]]:
    """Page name: (route in the UI, text the page shows once loaded)."""
    experiment = f"#/experiments/{own.experiment_id}"
    run = f"{experiment}/runs/{own.run_id}"
    return {
        "experiments": ("#/experiments", own.experiment_name),
        "runs": (f"{experiment}/runs", own.run_name),
        "run": (run, "loss"),
        "run-artifacts": (f"{run}/artifacts", "notes.txt"),
        "logged-model": (f"{experiment}/models/{own.logged_model_id}", "Ready"),
        "registry": ("#/models", own.model_name),
        "model-version": (
            f"#/models/{own.model_name}/versions/{own.version}",
            f"Version {own.version}",
        ),
        "settings": ("#/settings", "Enable telemetry"),
    }


def open_ui_page(page: Page, uri: str, route: str, shown: str) -> None:
    page.goto(uri + route)
    expect(page.get_by_text(shown, exact=True).first).to_be_visible()
    dismiss_promotion(page)


# The main control that writes, on the pages that have one.
WRITE_CONTROLS = {
    "experiments": "Create",
    "runs": "New run",
    "logged-model": "Register model",
    "registry": "Create Model",
    "model-version": "Promote model",
}


def assert_writes_offered(page: Page, label: str, *, offered: bool) -> None:
    if label == "runs":
        # Selecting a run offers to rename or delete it.
        page.get_by_role("checkbox").nth(1).check()
        for action in ("Rename", "Delete"):
            actions = page.get_by_role("button", name=action, exact=True)
            expect(actions).to_have_count(1 if offered else 0)
        page.get_by_role("checkbox").nth(1).uncheck()
    control = WRITE_CONTROLS.get(label)
    if control is None:
        return
    buttons = page.get_by_role("button", name=control, exact=True)
    if offered:
        expect(buttons.first).to_be_visible()
    else:
        expect(buttons).to_have_count(0)
    # The page header's menu holds only Rename and Delete.
    menu = page.locator(
        '[data-component-id^="codegen_mlflow_app_src_shared_building_blocks_pageheader"]'
    )
    if not offered:
        expect(menu.filter(visible=True)).to_have_count(0)


def assert_no_refused_feature_offered(page: Page) -> None:
    visible = page.locator("body").inner_text()
    assert not REFUSED_FEATURES.search(visible), REFUSED_FEATURES.findall(visible)
    # A refused request the page made on its own shows as an error toast.
    assert "PERMISSION_DENIED" not in visible
    # Demo data cannot be made or cleared here (the home page is hidden).
    assert "Clear all demo data" not in visible


def test_ui_shows_one_project_and_nothing_of_another(
    visit: Visit,
    caller: Caller,
    objects: dict[tuple[str, str], Objects],
    request: pytest.FixtureRequest,
) -> None:
    own = objects[caller.server, caller.project]
    others = [o for key, o in objects.items() if key[0] == caller.server and o != own]
    name = request.node.callspec.id
    page = visit.page

    page.goto(visit.server.url + "/")
    visit.shoot(f"ui-{name}-home")
    uri = visit.server.uri(caller.project)
    for label, (route, shown) in ui_pages(own).items():
        open_ui_page(page, uri, route, shown)
        if label == "run-artifacts":
            page.get_by_text("notes.txt", exact=True).click()
            notes = f"notes of {caller.project.rsplit('/', 1)[1]}"
            expect(page.get_by_text(notes)).to_be_visible()
        bar = page.locator("#sharinghub-bar")
        expect(bar).to_contain_text(PROJECT_NAMES[caller.project])
        expect(bar).to_contain_text(caller.project)
        expect(bar).to_contain_text("Read-only" if caller.read_only else "Can edit")
        assert_no_refused_feature_offered(page)
        assert_writes_offered(page, label, offered=not caller.read_only)
        visit.shoot(f"ui-{name}-{label}")
        html = page.content()
        for other in others:
            for identifier in other.identifiers():
                assert identifier not in html, (label, identifier)

    for url, body in visit.bodies.items():
        for other in others:
            for identifier in other.identifiers():
                assert identifier not in body, (url, identifier)
    telemetry = "localStorage.getItem('mlflow.settings.telemetry.enabled_v1')"
    assert page.evaluate(telemetry) == "false"
    sent = [r.url for r in visit.responses if r.request.method != "GET"]
    assert not [url for url in sent if "telemetry" in url]


def test_home_page_lists_the_callers_projects(browser: Browser, server: Server) -> None:
    context = browser.new_context()
    try:
        visit = Visit(context, server)
        visit.log_in("dev-a")
        page = visit.page
        shoot(page, "home-dev-a")
        projects = page.locator("ul.projects > li")
        expect(projects).to_have_count(2)
        expect(projects.first).to_contain_text("eo/flood-model")
        expect(projects.first).to_contain_text(
            f"export MLFLOW_TRACKING_URI={server.uri(FLOOD)}"
        )
        expect(projects.first).to_contain_text("export MLFLOW_TRACKING_TOKEN=")
        expect(projects.last).to_contain_text(DEMO)
        assert CROPS not in page.content()

        page.get_by_role("link", name="Flood Model").click()
        expect(page.locator("#sharinghub-bar")).to_contain_text("Can edit")
        assert page.url == server.uri(FLOOD) + "#/experiments"

        page.get_by_role("link", name="All my projects").click()
        page.get_by_role("link", name="Log out").click()
        expect(page.get_by_role("link", name="Log in with SharingHub")).to_be_visible()
        shoot(page, "home-logged-out")
    finally:
        context.close()


def test_log_in_from_the_ui_comes_back_to_the_same_page(
    browser: Browser, open_server: Server, objects: dict[tuple[str, str], Objects]
) -> None:
    model = objects["open_server", DEMO].model_name
    context = browser.new_context()
    try:
        page = context.new_page()
        here = open_server.uri(DEMO) + "#/models"
        page.goto(here)
        bar = page.locator("#sharinghub-bar")
        expect(bar).to_contain_text("Read-only")
        expect(page.get_by_text(model, exact=True)).to_be_visible()
        dismiss_promotion(page)

        bar.get_by_role("link", name="Log in").click()
        page.get_by_label("GitLab token").fill("dev-a")
        page.get_by_role("button", name="Sign in", exact=True).click()

        expect(bar.get_by_role("link", name="Log out")).to_be_visible()
        assert page.url == here
    finally:
        context.close()


def test_tracking_without_slash_opens_the_ui(browser: Browser, server: Server) -> None:
    context = browser.new_context(extra_http_headers={"Authorization": "Bearer dev-a"})
    try:
        page = context.new_page()
        page.goto(server.uri(FLOOD).rstrip("/"))
        expect(page.locator("#sharinghub-bar")).to_contain_text(FLOOD)
        assert page.url == server.uri(FLOOD) + "#/experiments"
    finally:
        context.close()


def test_project_bar_keeps_its_links_in_a_narrow_window(
    browser: Browser, server: Server
) -> None:
    context = browser.new_context(
        viewport={"width": 560, "height": 600},
        extra_http_headers={"Authorization": "Bearer rep-a"},
    )
    try:
        page = context.new_page()
        page.goto(server.uri(FLOOD))
        bar = page.locator("#sharinghub-bar")
        expect(bar).to_contain_text("Read-only")
        shoot(page, "narrow-window")
        for link in bar.get_by_role("link").all():
            box = link.bounding_box()
            assert box is not None
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= 560, link.inner_text()
    finally:
        context.close()


@contextmanager
def framed(
    browser: Browser, server: Server, parent: str
) -> Iterator[tuple[Page, Response]]:
    """``parent``, a page of its origin served by the browser itself, frames the UI."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 900},
        extra_http_headers={"Authorization": "Bearer dev-a"},
    )
    # A page the browser serves itself counts as public: Chromium would block
    # its frame of a loopback server, which a deployed SharingHub never meets.
    context.grant_permissions(["local-network-access"])
    try:
        page = context.new_page()
        frame_page = (
            "<!doctype html><title>SharingHub</title><h1>SharingHub</h1>"
            f'<iframe src="{server.uri(FLOOD)}" width="1200" height="760"></iframe>'
        )
        page.route(
            parent,
            lambda route: route.fulfill(content_type="text/html", body=frame_page),
        )
        with page.expect_response(server.uri(FLOOD)) as document:
            page.goto(parent)
        yield page, document.value
    finally:
        context.close()


def test_ui_works_in_a_sharinghub_frame(
    browser: Browser, server: Server, standin: Standin
) -> None:
    with framed(browser, server, standin.url + "/embed") as (page, document):
        assert document.status == 200
        frame = page.frame_locator("iframe")
        expect(frame.locator("#sharinghub-bar")).to_contain_text(FLOOD)
        expect(frame.get_by_text("Experiments").first).to_be_visible()
        shoot(page, "framed-by-sharinghub")


def assert_frame_refused(page: Page, document: Response) -> None:
    """MLflow's page came back to the frame, and the browser refused to show it."""
    assert document.status == 200
    assert "frame-ancestors" in document.headers["content-security-policy"]
    page.wait_for_load_state("networkidle")
    child = page.frames[1]
    assert child.evaluate("document.getElementById('root')") is None


def test_ui_refuses_other_frames(
    browser: Browser, server: Server, standin: Standin
) -> None:
    elsewhere = f"http://127.0.0.2:{standin.port}/embed"
    with framed(browser, server, elsewhere) as (page, document):
        assert_frame_refused(page, document)
        shoot(page, "framed-elsewhere")


def test_frame_ancestors_setting_names_who_may_frame(
    browser: Browser, standin: Standin, backend: str, tmp_path: Path
) -> None:
    portal = f"http://127.0.0.2:{standin.port}"
    instance = Server(tmp_path, standin, SHARINGHUB_FRAME_ANCESTORS=portal)
    instance.start()
    try:
        with framed(browser, instance, portal + "/embed") as (page, _):
            frame = page.frame_locator("iframe")
            expect(frame.locator("#sharinghub-bar")).to_contain_text(FLOOD)
        with framed(browser, instance, standin.url + "/embed") as (page, document):
            assert_frame_refused(page, document)
    finally:
        instance.stop()
