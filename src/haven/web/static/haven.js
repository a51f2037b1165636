// Haven dashboard: live vault-name validation and live job progress. No framework, no CDN.
(function () {
  "use strict";

  // ---- quick create: the vault name rules (same as haven.domain.vault.validate_vault_name) ----
  var VAULT_NAME = /^[A-Za-z][A-Za-z0-9-]{1,49}$/;
  function vaultNameProblem(name) {
    if (name.length === 0) return "Enter a name.";
    if (name.length < 2) return "Too short: a vault name has at least 2 characters.";
    if (name.length > 50) return "Too long: a vault name has at most 50 characters (this one has " + name.length + ").";
    if (!/^[A-Za-z]/.test(name)) return "A vault name must start with a letter.";
    var bad = name.replace(/[A-Za-z0-9-]/g, "");
    if (bad) return "Only letters, digits and hyphens are allowed (not " + JSON.stringify(bad.charAt(0)) + ").";
    return VAULT_NAME.test(name) ? null : "Invalid name.";
  }
  window.havenVaultNameProblem = vaultNameProblem;

  function wireVaultName() {
    var input = document.querySelector("input[data-validate=vault-name]");
    if (!input) return;
    var out = document.getElementById("name-check");
    var form = input.form, button = form && form.querySelector("button[type=submit]");
    var taken = {};
    try { taken = JSON.parse((form && form.dataset.taken) || "{}"); } catch (e) { taken = {}; }
    var subscription = form && form.querySelector("select[name=subscription]");
    function takenProblem(name) {
      var sub = subscription ? subscription.value : "";
      var names = taken[sub] || [];
      for (var i = 0; i < names.length; i++) {
        if (names[i].toLowerCase() === name.toLowerCase()) return "A vault named " + names[i] + " already exists in subscription " + sub + ": choose another name.";
      }
      return null;
    }
    function check(show) {
      var problem = vaultNameProblem(input.value) || takenProblem(input.value);
      input.classList.toggle("invalid", !!problem && show);
      input.classList.toggle("valid", !problem);
      input.setAttribute("aria-invalid", problem ? "true" : "false");
      if (out) {
        out.textContent = problem ? (show ? problem : "") : "✓ Valid name";
        out.className = "check " + (problem ? "bad" : "ok");
      }
      if (button) button.disabled = !!problem;
      return !problem;
    }
    input.addEventListener("input", function () { check(true); });
    if (subscription) subscription.addEventListener("change", function () { check(input.value.length > 0); });
    check(input.value.length > 0);
    if (form) form.addEventListener("submit", function (e) { if (!check(true)) e.preventDefault(); });
  }

  // ---- live job progress: poll the session-authenticated status endpoint ----
  function statusClass(s) {
    if (s === "Completed") return "ok";
    if (s === "Failed" || s === "Cancelled") return "bad";
    if (s === "CompletedWithWarnings") return "warn";
    return "info";
  }
  function poll(el) {
    var url = "/ui/s/" + encodeURIComponent(el.dataset.sub) + "/jobs/" + encodeURIComponent(el.dataset.job) + "/status";
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) return;
        var badge = el.querySelector(".badge.status");
        if (badge) { badge.textContent = data.status; badge.className = "badge status " + statusClass(data.status); }
        el.dataset.status = data.status;
        var bar = el.querySelector("progress"), pct = el.querySelector(".pct");
        if (bar && data.percent !== null) bar.value = data.percent;
        if (pct && data.percent !== null) pct.textContent = data.percent + "%" + (data.active ? " · " + data.active : "");
        var dur = el.querySelector(".dur");
        if (dur) dur.textContent = data.duration;
        var started = el.querySelector(".started");
        if (started && data.started) started.textContent = data.started;
        var card = document.getElementById("subtasks-card");
        if (card && el.dataset.reload && data.subtasks && String(data.subtasks.length) !== card.dataset.count) {
          window.location.reload();  // a new step began: show it
          return;
        }
        if (data.finished) {
          delete el.dataset.live;
          if (bar) bar.remove();
          if (pct) pct.remove();
          if (el.dataset.reload) window.location.reload();
        }
      })
      .catch(function () { /* try again on the next tick */ });
  }
  function tick() {
    var live = document.querySelectorAll("[data-live]");
    live.forEach(poll);
    if (live.length) window.setTimeout(tick, 1000);
  }

  // ---- configure backup: the ticked VMs live in the address, so a reload keeps them ----
  function wireVmSelection() {
    var form = document.getElementById("enable-form");
    if (!form) return;
    form.addEventListener("change", function () {
      var refs = Array.prototype.map.call(form.querySelectorAll("input[name=vms]:checked"), function (b) { return b.value; });
      var url = new URL(window.location.href);
      if (refs.length) url.searchParams.set("selected", refs.join(",")); else url.searchParams.delete("selected");
      window.history.replaceState(null, "", url.toString());
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    wireVaultName();
    wireVmSelection();
    if (document.querySelector("[data-live]")) window.setTimeout(tick, 700);
  });
  // ---- restore options: Enter in a panel's field submits that panel's option, not the form's first button ----
  document.addEventListener("keydown", function (e) {
    if (e.key !== "Enter" || !e.target || e.target.tagName !== "INPUT") return;
    var panel = e.target.closest && e.target.closest("fieldset.panel");
    var button = panel && panel.querySelector("button[type=submit]");
    if (button) { e.preventDefault(); button.click(); }
  });
})();
