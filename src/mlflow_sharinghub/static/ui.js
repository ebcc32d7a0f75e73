// mlflow-sharinghub: MLflow's UI as one SharingHub project's page.
//
// Loaded by MLflow's own page before MLflow's script runs. It switches off
// what this server does not offer, opens the UI on the experiments, and shows
// the project and the caller's access from "sharinghub/context" (relative to
// the page, so it stays under the project's tracking URI). Every value is set
// as text, never as markup.
(function () {
  "use strict";

  // MLflow's UI keeps these preferences in localStorage ("<key>_v<version>").
  var preferences = {
    "mlflow.settings.telemetry.enabled_v1": "false",
    "mlflow.telemetry.info.alert.dismissed_v1": "true",
    "mlflow.assistant.panelOpen_v1": "false",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
  };
  try {
    Object.keys(preferences).forEach(function (key) {
      localStorage.setItem(key, preferences[key]);
    });
    // AI-model projects train models: start there, keep the user's choice.
    if (localStorage.getItem("mlflow.workflowType_v1") === null) {
      localStorage.setItem("mlflow.workflowType_v1", '"machine_learning"');
    }
  } catch (error) {
    // Storage may be off (private mode, a sandboxed frame): MLflow's defaults.
  }

  function openOnExperiments() {
    var hash = window.location.hash;
    if (hash === "" || hash === "#" || hash === "#/" || hash.indexOf("#/?") === 0) {
      window.location.replace("#/experiments");
    }
  }
  openOnExperiments();
  window.addEventListener("hashchange", openOnExperiments);

  function element(tag, text, attributes) {
    var node = document.createElement(tag);
    if (text) node.textContent = text;
    Object.keys(attributes || {}).forEach(function (name) {
      node.setAttribute(name, attributes[name]);
    });
    return node;
  }

  // The login and logout URLs end with redirect_uri, so the route within
  // the UI can be appended to come back to the same page.
  function returningLink(text, url) {
    var link = element("a", text, { href: url });
    link.addEventListener("click", function () {
      link.href = url + encodeURIComponent(window.location.hash);
    });
    return link;
  }

  function bar(context) {
    var project = context.project;
    var nav = element("nav", "", {
      id: "sharinghub-bar",
      "aria-label": "SharingHub project",
      "data-project-path": project.path,
    });
    // Titles keep the whole name and path when a narrow frame cuts them.
    nav.appendChild(
      element("span", project.name, { class: "sharinghub-name", title: project.name })
    );
    nav.appendChild(element("code", project.path, { title: project.path }));
    var badge = context.read_only ? "Read-only" : "Can edit";
    nav.appendChild(
      element("span", badge, {
        class: "sharinghub-badge" + (context.read_only ? " sharinghub-read-only" : ""),
        title: "Your access: " + context.access,
      })
    );
    nav.appendChild(
      element("a", "Open in SharingHub", {
        href: context.sharinghub_project_url,
        target: "_top",
        rel: "noopener",
      })
    );
    nav.appendChild(element("span", "", { class: "sharinghub-spacer" }));
    nav.appendChild(element("a", "All my projects", { href: context.home_url }));
    if (context.anonymous) {
      nav.appendChild(returningLink("Log in", context.login_url));
    } else {
      nav.appendChild(returningLink("Log out", context.logout_url));
    }
    return nav;
  }

  function show(context) {
    var root = document.documentElement;
    if (context.read_only) root.classList.add("sharinghub-read-only");
    document.body.insertBefore(bar(context), document.body.firstChild);
    root.classList.add("sharinghub-ready");
  }

  function load() {
    fetch("sharinghub/context", {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(function (context) {
        if (context && context.project) show(context);
      })
      .catch(function () {
        // Without the context the UI still works; the server decides access.
      });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", load);
  } else {
    load();
  }
})();
