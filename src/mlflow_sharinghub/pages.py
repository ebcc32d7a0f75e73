"""The server's own pages, for browsers; every value in them is escaped."""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from mlflow_sharinghub.errors import Unavailable
from mlflow_sharinghub.sharinghub import ListedProject, Refusal

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;
padding:0 1rem;line-height:1.5;color:#1f2937}
code,pre{background:#f3f4f6;border-radius:4px;padding:.1rem .3rem}
pre{padding:.75rem;overflow-x:auto}a{color:#1d4ed8}
nav{display:flex;gap:1rem;justify-content:flex-end}
ul.projects{list-style:none;padding:0}ul.projects>li{border-top:1px solid #e5e7eb}
ul.projects h2{font-size:1.15rem;margin:1rem 0 .25rem}
"""
_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title><style>{style}</style></head>
"""
_TOKEN_LINE = "export MLFLOW_TRACKING_TOKEN=&lt;your GitLab token&gt;"  # noqa: S105


def landing_page(
    *,
    base_url: str,
    sharinghub_url: str,
    collection: str,
    login_url: str | None = None,
) -> str:
    """What ``<base>/`` shows: how to reach a project's MLflow."""
    example = f"{base_url}/<group>/<project>/tracking/"
    by_id = f"{base_url}/<project id>/tracking/"
    login = (
        f'<p><a href="{escape(login_url)}">Log in with SharingHub</a> to see the '
        "list of your projects and their tracking URIs.</p>"
        if login_url
        else ""
    )
    head = _HEAD.format(title="MLflow for SharingHub projects", style=_STYLE)
    return f"""{head}<body><main>
<h1>MLflow for SharingHub projects</h1>{login}
<p>Each AI model project of <a href="{escape(sharinghub_url)}">SharingHub</a>
(collection <code>{escape(collection)}</code>) has its own MLflow tracking server
and model registry, at its own tracking URI:</p>
<pre>{escape(example)}
{escape(by_id)}</pre>
<p>Open that address in a browser to see the project's experiments and models,
or point the MLflow client at it with a GitLab token:</p>
<pre>export MLFLOW_TRACKING_URI={escape(example)}
{_TOKEN_LINE}</pre>
<p>Who may read or write a project is decided by SharingHub: reporters read,
developers and maintainers write.</p>
</main></body></html>
"""


def home_page(
    *,
    base_url: str,
    sharinghub_url: str,
    collection: str,
    projects: list[ListedProject] | Refusal | Unavailable,
    login_url: str,
    logout_url: str,
) -> str:
    """What ``<base>/`` shows a browser with a SharingHub session: its projects."""
    head = _HEAD.format(title="Your MLflow projects", style=_STYLE)
    nav = (
        f'<nav aria-label="SharingHub"><a href="{escape(sharinghub_url)}">'
        f'SharingHub</a><a href="{escape(logout_url)}">Log out</a></nav>'
    )
    return f"""{head}<body>{nav}<main>
<h1>Your MLflow projects</h1>
<p>The projects of SharingHub's <code>{escape(collection)}</code> collection that
you can see. Each has its own MLflow tracking server and model registry: open
it in the browser, or point the MLflow client at its tracking URI with a GitLab
token.</p>
{_project_list(base_url, projects, login_url)}
</main></body></html>
"""


def _project_list(
    base_url: str,
    projects: list[ListedProject] | Refusal | Unavailable,
    login_url: str,
) -> str:
    if isinstance(projects, Unavailable):
        return f'<p role="alert">{escape(projects.message)}</p>'
    if projects is Refusal.BAD_CREDENTIALS:
        return (
            '<p role="alert">SharingHub did not accept your session. '
            f'<a href="{escape(login_url)}">Log in again</a>.</p>'
        )
    if isinstance(projects, Refusal):
        return '<p role="alert">SharingHub does not know this collection.</p>'
    if not projects:
        return "<p>You cannot see any project of this collection yet.</p>"
    items = "".join(_project_item(base_url, project) for project in projects)
    return f'<ul class="projects">{items}</ul>'


def _project_item(base_url: str, project: ListedProject) -> str:
    uri = escape(f"{base_url}/{quote(project.path)}/tracking/")
    return (
        f'<li><h2><a href="{uri}">{escape(project.title)}</a></h2>'
        f"<p><code>{escape(project.path)}</code></p>"
        f"<pre>export MLFLOW_TRACKING_URI={uri}\n{_TOKEN_LINE}</pre></li>"
    )
