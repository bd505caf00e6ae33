/// The status page served at `GET /`: plain HTML, CSS and JavaScript in the binary (no build
/// step). It follows `/status/stream` (Server-Sent Events, a snapshot a second) and acts through
/// `POST /mi` with the same credentials (the `evi_token` cookie when a token is set).
enum StatusPage {
    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>evi status</title>
        <style>
          :root { --fg:#1d2430; --muted:#667085; --line:#e4e7ec; --up:#067647; --down:#b42318; --bg:#f8f9fb; }
          * { box-sizing: border-box; }
          body { margin:0; font:15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--fg); background:var(--bg); }
          header { display:flex; flex-wrap:wrap; gap:.5rem 1rem; align-items:baseline; padding:1rem; background:#fff; border-bottom:1px solid var(--line); }
          header h1 { margin:0; font-size:1.25rem; }
          #live { font-size:.85rem; color:var(--muted); }
          #live.on::before { content:"● "; color:var(--up); }
          #live.off::before { content:"● "; color:var(--down); }
          main { padding:1rem; max-width:1100px; margin:auto; }
          section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:.75rem 1rem; margin-bottom:1rem; }
          h2 { font-size:1rem; margin:.25rem 0 .5rem; }
          .event h2 { display:flex; flex-wrap:wrap; gap:.25rem 1rem; align-items:baseline; }
          .event h2 small { color:var(--muted); font-weight:normal; }
          table { width:100%; border-collapse:collapse; font-size:.9rem; }
          th, td { text-align:left; padding:.35rem .4rem; border-top:1px solid var(--line); vertical-align:top; }
          th { color:var(--muted); font-weight:600; border-top:none; }
          td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
          code { font-size:.85rem; word-break:break-all; }
          .state { display:inline-block; padding:0 .4rem; border-radius:4px; font-size:.8rem; color:#fff; }
          .state.up { background:var(--up); } .state.failed { background:var(--down); }
          .members { margin:.25rem 0 0; padding:0; list-style:none; font-size:.85rem; }
          .members li { margin:.15rem 0; }
          .empty { color:var(--muted); font-style:italic; }
          button { font:inherit; font-size:.85rem; padding:.2rem .6rem; border:1px solid var(--line); border-radius:6px; background:#fff; cursor:pointer; }
          button:hover { border-color:var(--fg); }
          form { display:flex; flex-wrap:wrap; gap:.5rem; align-items:center; }
          input, select { font:inherit; padding:.2rem .4rem; border:1px solid var(--line); border-radius:6px; min-width:0; }
          input[name=params] { flex:1 1 14rem; }
          #message { color:var(--muted); font-size:.85rem; min-height:1.2em; }
          @media (max-width:640px) { .wide { display:none; } th, td { padding:.3rem .2rem; } }
        </style>
        </head>
        <body>
        <header><h1>evi</h1><span id="version"></span><span id="live" class="off">connecting…</span><span id="streams"></span></header>
        <main>
          <section id="raise">
            <h2>Raise a test event</h2>
            <form id="raise-form">
              <select name="event" id="raise-event" aria-label="event"></select>
              <input name="params" id="raise-params" value='{"test":true}' aria-label="parameters (JSON)">
              <button type="submit">Raise</button>
            </form>
            <div id="message" role="status"></div>
          </section>
          <div id="events"><section class="empty">Waiting for the first snapshot…</section></div>
          <section id="ingress"><h2>Ingress</h2><div class="body"></div></section>
          <section id="spool"><h2>Durable delivery</h2><div class="body"></div></section>
        </main>
        <script>
        "use strict";
        let previous = null, previousAt = 0;
        const $ = (selector, root = document) => root.querySelector(selector);
        const text = (value) => String(value ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
        function say(message) { $("#message").textContent = message; }

        async function mi(method, params) {
          const response = await fetch("/mi", { method: "POST", credentials: "same-origin",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ jsonrpc: "2.0", method, params, id: 1 }) });
          if (!response.ok) throw new Error("HTTP " + response.status);
          const reply = await response.json();
          if (reply.error) throw new Error(reply.error.message);
          return reply.result;
        }

        function rate(now, old, seconds) {
          if (old === undefined || seconds <= 0) return "";
          return Math.max(0, (now - old) / seconds).toFixed(1);
        }

        function render(snapshot) {
          const at = Date.now() / 1000, seconds = previous ? at - previousAt : 0;
          const old = {};
          if (previous) for (const e of previous.events) {
            old[e.name] = e.raised;
            for (const s of e.subscribers) old[e.name + " " + s.socket] = s.delivered;
          }
          $("#version").textContent = snapshot.version;
          $("#streams").textContent = snapshot.streams + " open stream" + (snapshot.streams === 1 ? "" : "s");
          const select = $("#raise-event"), chosen = select.value;
          const own = (e) => !e.name.startsWith("E_VIRTUAL_MEMBER_") && e.name !== "E_FLATSTORE_ROTATION";
          select.innerHTML = [...snapshot.events.filter(own), ...snapshot.events.filter(e => !own(e))]
            .map(e => `<option>${text(e.name)}</option>`).join("");
          if (chosen) select.value = chosen;
          const events = snapshot.events.filter(e => own(e) || e.subscribers.length);
          $("#events").innerHTML = events.length ? events.map(e => `
            <section class="event" data-event="${text(e.name)}">
              <h2>${text(e.name)} <small>raised ${e.raised} · <span class="rate">${rate(e.raised, old[e.name], seconds) || "–"}</span>/s</small></h2>
              ${e.subscribers.length ? `<table><thead><tr><th>subscriber</th><th class="wide">transport</th><th class="wide">expires</th>
                <th class="num">delivered</th><th class="num">failed</th><th class="num">dropped</th><th class="num wide">/s</th><th></th></tr></thead><tbody>
              ${e.subscribers.map(s => `<tr class="subscriber" data-socket="${text(s.socket)}">
                <td><code>${text(s.socket)}</code>${s.filter ? `<br><small class="filter">filter <code>${text(s.filter)}</code></small>` : ""}${s.fields ? `<br><small class="fields">fields <code>${text(s.fields)}</code></small>` : ""}${s.members ? `<ul class="members">${s.members.map(m => `
                  <li class="member" data-member="${text(m.socket)}"><span class="state ${text(m.state)}">${text(m.state)}</span>
                  <code>${text(m.socket)}</code>${m.state === "failed" && m.retry_in !== undefined ? ` <small>retry in ${text(m.retry_in)} s</small>` : ""}
                  <small>${m.delivered ?? 0} delivered, ${m.failed ?? 0} failed</small></li>`).join("")}</ul>` : ""}</td>
                <td class="wide">${text(s.transport)}</td><td class="wide">${text(s.expire)}</td>
                <td class="num">${s.delivered ?? (s.members || []).reduce((n, m) => n + (m.delivered || 0), 0)}</td>
                <td class="num">${s.failed ?? (s.members || []).reduce((n, m) => n + (m.failed || 0), 0)}</td>
                <td class="num">${s.dropped ?? 0}</td>
                <td class="num wide">${rate(s.delivered, old[e.name + " " + s.socket], seconds)}</td>
                <td><button class="unsubscribe" data-event="${text(e.name)}" data-socket="${text(s.socket)}">Unsubscribe</button></td></tr>`).join("")}
              ${e.more ? `<tr class="more"><td colspan="8">and ${e.more} more</td></tr>` : ""}
              </tbody></table>` : `<p class="empty">No subscribers.</p>`}
            </section>`).join("") : `<section class="empty">No events published yet (evi publish E_NAME).</section>`;
          const ingress = snapshot.ingress && snapshot.ingress.Ingress;
          $("#ingress .body").innerHTML = ingress && ingress.length ? `<table><tbody>${ingress.map(i =>
            `<tr><td><code>${text(i.socket)}</code></td><td class="num">${i.received ?? 0} received</td><td class="num">${i.connections ?? 0} connections</td></tr>`).join("")}</tbody></table>`
            : `<p class="empty">No ingress configured: events come in over MI only.</p>`;
          const spools = snapshot.spool && snapshot.spool.Spools, dead = (snapshot.dead_letters && snapshot.dead_letters.DeadLetters) || [];
          $("#spool .body").innerHTML = !spools ? `<p class="empty">Durable delivery is off (delivery: memory).</p>`
            : (spools.length ? `<table><thead><tr><th>spool</th><th class="num">events</th><th class="num">bytes</th><th class="wide">last error</th></tr></thead><tbody>${spools.map(s =>
              `<tr><td><code>${text(s.event)} → ${text(s.socket)}</code></td><td class="num">${s.events}</td><td class="num">${s.bytes}</td><td class="wide">${text(s.last_error ?? "")}</td></tr>`).join("")}</tbody></table>`
              : `<p class="empty">No durable subscriptions.</p>`)
              + (dead.length ? `<h2>Dead letters</h2><table><tbody>${dead.map(d => `<tr><td><code>${text(d.event)} → ${text(d.socket)}</code></td>
                <td class="num">${d.count}</td><td><button class="replay" data-event="${text(d.event)}" data-socket="${text(d.socket)}">Replay</button></td></tr>`).join("")}</tbody></table>` : "");
          previous = snapshot; previousAt = at;
        }

        document.addEventListener("click", async (click) => {
          const button = click.target.closest("button.unsubscribe, button.replay");
          if (!button) return;
          const unsubscribe = button.classList.contains("unsubscribe");
          try {
            await mi(unsubscribe ? "evi:unsubscribe" : "evi:replay", [button.dataset.event, button.dataset.socket]);
            say((unsubscribe ? "Unsubscribed " : "Replaying ") + button.dataset.socket);
          } catch (error) { say("Failed: " + error.message); }
        });

        $("#raise-form").addEventListener("submit", async (submit) => {
          submit.preventDefault();
          let params;
          try { params = JSON.parse($("#raise-params").value || "{}"); } catch { say("Parameters are not JSON"); return; }
          try { await mi("evi:raise", [$("#raise-event").value, params]); say("Raised " + $("#raise-event").value); }
          catch (error) { say("Failed: " + error.message); }
        });

        function follow() {
          const stream = new EventSource("/status/stream");
          stream.onopen = () => { $("#live").className = "on"; $("#live").textContent = "live"; };
          stream.onmessage = (message) => render(JSON.parse(message.data));
          stream.onerror = () => { $("#live").className = "off"; $("#live").textContent = "disconnected, retrying"; };
        }
        follow();
        </script>
        </body>
        </html>
        """#

    /// What `GET /` answers without credentials when a token is set.
    static let login = #"""
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>evi: token needed</title></head>
        <body style="font:16px system-ui,sans-serif;margin:2rem;max-width:40rem">
        <h1>evi</h1><p>This MI needs its token (<code>mi.token</code>). Open <code>/?token=TOKEN</code> once:
        the browser then keeps it in an <code>evi_token</code> cookie (HttpOnly, SameSite=Strict).</p>
        </body></html>
        """#
}
