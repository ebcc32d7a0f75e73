"""The server's own pages, for browsers; every value in them is escaped."""

from __future__ import annotations

from html import escape

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;
padding:0 1rem;line-height:1.5;color:#1f2937}
code,pre{background:#f3f4f6;border-radius:4px;padding:.1rem .3rem}
pre{padding:.75rem;overflow-x:auto}a{color:#1d4ed8}
"""


def landing_page(*, base_url: str, sharinghub_url: str, collection: str) -> str:
    """What ``<base>/`` shows: how to reach a project's MLflow."""
    example = f"{base_url}/<group>/<project>/tracking/"
    by_id = f"{base_url}/<project id>/tracking/"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>MLflow for SharingHub projects</title><style>{_STYLE}</style></head>
<body><main>
<h1>MLflow for SharingHub projects</h1>
<p>Each AI model project of <a href="{escape(sharinghub_url)}">SharingHub</a>
(collection <code>{escape(collection)}</code>) has its own MLflow tracking server
and model registry, at its own tracking URI:</p>
<pre>{escape(example)}
{escape(by_id)}</pre>
<p>Open that address in a browser to see the project's experiments and models,
or point the MLflow client at it with a GitLab token:</p>
<pre>export MLFLOW_TRACKING_URI={escape(example)}
export MLFLOW_TRACKING_TOKEN=&lt;your GitLab token&gt;</pre>
<p>Who may read or write a project is decided by SharingHub: reporters read,
developers and maintainers write.</p>
</main></body></html>
"""
