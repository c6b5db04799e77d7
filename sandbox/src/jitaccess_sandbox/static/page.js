(function () {
  "use strict";
  var CONFIG = JSON.parse(document.getElementById("config").textContent);
  var P = CONFIG.prefix;
  function $(s, r) { return (r || document).querySelector(s); }
  function $$(s, r) { return Array.prototype.slice.call((r || document).querySelectorAll(s)); }
  var ids = CONFIG.users.map(function (u) { return u.id; });
  var params = new URLSearchParams(location.search);
  var user = ids.indexOf(params.get("user")) >= 0 ? params.get("user") : ids[0];
  var tab = params.get("tab") === "home" ? "home" : "messages";
  var channels = [];
  var version = -1, modalKey = "", fastUntil = 0, busy = false, again = false, timer = null;
  var counts = {}, seen = {}, scrollDown = true, toastTimer = null;
  var form = $("#modal-form");

  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }
  function person(id) { return CONFIG.users.filter(function (u) { return u.id === id; })[0]; }
  function initials(name) {
    return name.split(" ").map(function (w) { return w[0]; }).join("").slice(0, 2);
  }

  function toast(text, bad) {
    var t = $("#toast");
    t.textContent = text; t.className = bad ? "bad" : ""; t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { t.hidden = true; }, bad ? 7000 : 3000);
  }

  function api(path, body) {
    var payload = Object.assign({user: user}, body || {});
    fastUntil = Date.now() + 4000;
    return fetch(P + "/" + path, {method: "POST", headers: {"Content-Type": "application/json"},
                                  body: JSON.stringify(payload)})
      .then(function (r) {
        return r.json().catch(function () { return {ok: false, error: "HTTP " + r.status}; });
      })
      .catch(function () { return {ok: false, error: "The sandbox is not answering."}; })
      .then(function (data) {
        if (data.ok === false) toast(data.error || "Something went wrong", true);
        fastUntil = Date.now() + 4000;
        poll();
        return data;
      });
  }

  function poll() {
    if (busy) { again = true; return; }
    busy = true;
    clearTimeout(timer);
    var asked = user;
    fetch(P + "/state?user=" + encodeURIComponent(asked) + "&since=" + version)
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) { $("#offline").hidden = true; if (s && asked === user) apply(s); },
            function () { $("#offline").hidden = false; })
      .then(function () {
        busy = false;
        if (again) { again = false; poll(); return; }
        timer = setTimeout(poll, Date.now() < fastUntil ? 200 : 1000);
      });
  }

  // The Azure panel: what the fake ARM holds (role assignments with the end Azure
  // enforces, PIM schedule requests), polled on its own.
  var azureTimer = null;
  function pollAzure() {
    clearTimeout(azureTimer);
    fetch(P + "/azure?user=" + encodeURIComponent(user))
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (a) { if (a) renderAzure(a); }, function () {})
      .then(function () { azureTimer = setTimeout(pollAzure, 2000); });
  }
  function renderAzure(a) {
    var box = $("#azure");
    box.hidden = !a.enabled;
    if (!a.enabled) return;
    var held = a.assignments.map(function (x) {
      return "<li class=\"az-assignment\"><b>" + esc(x.role) + "</b> for " + esc(x.who) +
        (x.ends_label ? "<br>Azure ends it <span class=\"ends\">" + esc(x.ends_label) +
          "</span>" : "<br>no end (a plain assignment)") + "</li>";
    }).join("");
    var asked = a.schedule_requests.map(function (r) {
      return "<li class=\"az-request\"><b>" + esc(r.type) + "</b> " + esc(r.status) +
        " (" + esc(r.created_label) + ")" +
        (r.ends_label ? "<br>until " + esc(r.ends_label) : "") + "</li>";
    }).join("");
    $("#azure-body").innerHTML =
      "<h3>Role assignments</h3>" +
      (held ? "<ul>" + held + "</ul>" : "<p class=\"none\">none</p>") +
      "<h3>PIM schedule requests</h3>" +
      (asked ? "<ul>" + asked + "</ul>" : "<p class=\"none\">none</p>") +
      "<p class=\"none\">" + esc(a.activity_events) + " Activity Log events</p>";
  }

  function apply(s) {
    if (s.unchanged) return;
    version = s.version;
    $("#clock").textContent = s.now_label;
    var off = s.offset_minutes;
    $("#offset").textContent = off ? "(+" + (off >= 60 ? Math.floor(off / 60) + " h " : "") +
      (off % 60 ? (off % 60) + " min" : "") + ")" : "";
    counts = s.counts || {};
    Object.keys(counts).forEach(function (id) { if (!(id in seen)) seen[id] = counts[id]; });
    seen[user] = counts[user] || 0;
    renderPeople();
    renderTimeline(s.timeline || []);
    $("#home-body").innerHTML = s.home ||
      '<p class="empty">Nothing is published on your Home tab yet.</p>';
    channels = s.channels || [];
    renderChannels();
    renderModal(s.modal);
  }

  function renderChannels() {
    $("#channel-tabs").innerHTML = channels.map(function (c) {
      return '<button type="button" class="tab' + (tab === "channel:" + c.id ? " active" : "") +
        '" data-tab="channel:' + esc(c.id) + '" title="A channel: what everyone in it sees">#' +
        esc(c.name) + "</button>";
    }).join("");
    var shown = channels.filter(function (c) { return tab === "channel:" + c.id; })[0];
    if (!shown) return;
    $("#channel-body").innerHTML = (shown.member ? "" :
      '<p class="empty">jitaccess is not in this channel: its posts are refused.</p>') +
      (shown.messages.length ? shown.messages.map(function (m) {
        return '<div class="msg kind-channel"><span class="avatar bot">J</span>' +
          '<div class="msg-main"><div class="msg-head"><b>jitaccess</b>' +
          '<span class="app-tag">APP</span></div><div class="msg-body">' + m.html +
          "</div></div></div>";
      }).join("") : '<p class="empty">Nothing posted in #' + esc(shown.name) + " yet.</p>");
  }

  function renderPeople() {
    $("#people").innerHTML = CONFIG.users.map(function (u) {
      var unread = u.id !== user && (counts[u.id] || 0) > (seen[u.id] || 0);
      return '<button type="button" class="user' + (u.id === user ? " active" : "") +
        '" data-user="' + esc(u.id) + '"><span class="avatar">' + esc(initials(u.name)) +
        '</span><span class="who"><b>' + esc(u.name) + "</b><small>" + esc(u.role) +
        "</small></span>" + (unread ? '<span class="dot" title="New messages"></span>' : "") +
        "</button>";
    }).join("");
    var me = person(user);
    $("#as").textContent = "You are " + me.name + " (" + me.tz + ")";
  }

  function renderTimeline(items) {
    var box = $("#messages");
    var atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
    var me = person(user);
    $("#timeline").innerHTML = items.length ? items.map(function (item) {
      var mine = item.kind === "command";
      var head = mine ? "<b>" + esc(me.name) + "</b>"
                      : '<b>jitaccess</b><span class="app-tag">APP</span>';
      return '<div class="msg kind-' + esc(item.kind) + '" data-source="' + esc(item.kind) +
        '" data-channel="' + esc(item.channel) + '" data-ts="' + esc(item.ts) + '" data-key="' +
        esc(item.key) + '">' + (mine ? '<span class="avatar">' + esc(initials(me.name)) + "</span>"
                                     : '<span class="avatar bot">J</span>') +
        '<div class="msg-main"><div class="msg-head">' + head + "</div>" +
        (item.kind === "ephemeral" ? '<div class="only-you">Only visible to you</div>' : "") +
        '<div class="msg-body">' + item.html + "</div></div></div>";
    }).join("") : '<p class="empty">No messages from jitaccess yet. Type <code>/jit help</code>' +
      " or <code>/jit request</code> below.</p>";
    if (atBottom || scrollDown) box.scrollTop = box.scrollHeight;
    scrollDown = false;
  }

  function collect() {
    var values = {};
    $$(".bk-input", form).forEach(function (el) {
      var c = $(".bk-control", el);
      if (!c) return;
      if (c.tagName === "SELECT" && c.multiple) {
        values[el.dataset.blockId] = Array.prototype.slice.call(c.selectedOptions)
          .map(function (o) { return o.value; });
      } else {
        values[el.dataset.blockId] = c.value;
      }
    });
    return values;
  }

  function restore(values) {
    $$(".bk-input", form).forEach(function (el) {
      var c = $(".bk-control", el), v = values[el.dataset.blockId];
      if (!c || v === undefined) return;
      if (c.tagName === "SELECT") {
        var want = Array.isArray(v) ? v : [v];
        var opts = Array.prototype.slice.call(c.options);
        var all = want.every(function (x) {
          return opts.some(function (o) { return o.value === x; });
        });
        if (!all) return;
        opts.forEach(function (o) { o.selected = want.indexOf(o.value) >= 0; });
      } else {
        c.value = v;
      }
    });
  }

  function renderModal(m) {
    var wrap = $("#modal");
    if (!m) {
      if (modalKey) { wrap.hidden = true; form.innerHTML = ""; modalKey = ""; }
      return;
    }
    var key = m.id + "|" + m.hash + "|" + JSON.stringify(m.errors || {});
    if (key === modalKey) return;
    var same = modalKey.split("|")[0] === m.id;
    var before = same ? collect() : null;
    if (before) {
      // A picker left at its initial time follows the view's new initial time.
      $$("input[type=datetime-local]", form).forEach(function (c) {
        if (c.value === c.dataset.initial) delete before[c.name];
      });
    }
    form.innerHTML = m.html;
    form.dataset.viewId = m.id;
    form.dataset.callbackId = m.callback_id || "";
    if (before) restore(before);
    modalKey = key;
    wrap.hidden = false;
    var error = $(".bk-has-error", form);
    var focus = error ? $(".bk-control", error) :
      (same ? null : $("textarea.bk-control, input.bk-control[type=text]", form));
    if (focus) focus.focus();
    if (error) error.scrollIntoView({block: "nearest"});
  }

  function closeModal() {
    var id = form.dataset.viewId;
    $("#modal").hidden = true; form.innerHTML = ""; modalKey = "";
    if (id) api("close", {view_id: id});
  }

  function clickButton(b) {
    if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
    if (b.dataset.url) window.open(b.dataset.url, "_blank", "noopener");
    var body = {block_id: b.dataset.blockId, action_id: b.dataset.actionId,
                value: b.dataset.value === undefined ? null : b.dataset.value};
    var msg = b.closest(".msg");
    if (msg) {
      body.source = msg.dataset.source === "ephemeral" ? "ephemeral" : "message";
      body.channel = msg.dataset.channel; body.ts = msg.dataset.ts;
    } else if (b.closest("#home")) {
      body.source = "home";
    } else if (b.closest("#modal-form")) {
      body.source = "modal"; body.view_id = form.dataset.viewId; body.values = collect();
    }
    b.disabled = true;
    api("click", body).then(function () { b.disabled = false; });
  }

  function switchUser(id) {
    if (id === user) return;
    user = id; version = -1; scrollDown = true;
    $("#modal").hidden = true; form.innerHTML = ""; modalKey = "";
    $("#timeline").innerHTML = ""; $("#home-body").innerHTML = "";
    renderPeople();
    remember();
    if (tab === "home") api("home-opened"); else poll();
  }

  function switchTab(name) {
    tab = name;
    $$(".tab").forEach(function (t) { t.classList.toggle("active", t.dataset.tab === name); });
    $("#messages").hidden = name !== "messages";
    $("#home").hidden = name !== "home";
    $("#channel").hidden = name.indexOf("channel:") !== 0;
    renderChannels();
    remember();
    if (name === "home") api("home-opened"); else { scrollDown = true; version = -1; poll(); }
  }

  function remember() {
    var query = "?user=" + encodeURIComponent(user) + (tab === "home" ? "&tab=home" : "");
    history.replaceState(null, "", query);
  }

  document.addEventListener("click", function (ev) {
    var t = ev.target;
    var el = t.closest("button.user");
    if (el) { switchUser(el.dataset.user); return; }
    el = t.closest("button.tab");
    if (el) { switchTab(el.dataset.tab); return; }
    el = t.closest("button[data-minutes]");
    if (el) {
      api("time", {minutes: Number(el.dataset.minutes)}).then(function () { pollAzure(); });
      return;
    }
    el = t.closest(".bk-close, #modal-x");
    if (el) { closeModal(); return; }
    el = t.closest("button.bk-button[data-action-id]");
    if (el) clickButton(el);
  });

  document.addEventListener("change", function (ev) {
    var input = ev.target.closest(".bk-input[data-dispatch]");
    if (!input || ev.target.tagName !== "SELECT" || !input.closest("#modal-form")) return;
    api("click", {source: "modal", view_id: form.dataset.viewId, block_id: input.dataset.blockId,
                  action_id: input.dataset.actionId, selected: ev.target.value, values: collect()});
  });

  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape" && !$("#modal").hidden) closeModal();
  });

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var button = $(".bk-submit", form);
    if (button) button.disabled = true;
    api("submit", {view_id: form.dataset.viewId, values: collect()}).then(function () {
      var again = $(".bk-submit", form);
      if (again) again.disabled = false;
    });
  });

  $("#composer").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var input = $("#command"), text = input.value.trim();
    if (!text) return;
    input.value = "";
    scrollDown = true;
    if (tab !== "messages") switchTab("messages");
    api("command", {text: text});
  });

  if (CONFIG.db) $("#dbnote").textContent = "The demo data is in " + CONFIG.db + ".";
  renderPeople();
  switchTab(tab);
  pollAzure();
  $("#command").focus();
})();
