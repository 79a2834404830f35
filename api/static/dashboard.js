// Live job list: while jobs are queued or running, poll GET /jobs and update state and progress in place.
// When a job ends (or a new one appears), reload the page so the table, plots and curves include it;
// while jobs keep running, reload every minute so the learning curves grow.
// Without JavaScript the page refreshes itself every 15 s instead (<noscript> meta refresh).
(function () {
  "use strict";
  const POLL_MS = 3000;
  const CURVES_MS = 60000;
  const loadedAt = Date.now();
  const ACTIVE = new Set(["queued", "running"]);
  const body = document.body;
  if (body.dataset.jobsActive !== "true") return;

  function progress(job) {  // GET /jobs lists summaries: steps summed over each job's runs
    return job.steps_total ? Math.round((100 * job.steps_done) / job.steps_total) : 0;
  }

  function update(row, job) {
    const state = row.querySelector(".state");
    state.textContent = job.state;
    state.className = "state state-" + job.state;
    const pct = progress(job);
    row.querySelector("progress").value = pct;
    row.querySelector(".pct").textContent = pct + "%";
  }

  async function poll() {
    try {
      const query = new URLSearchParams({ limit: body.dataset.jobsShown, offset: body.dataset.jobsOffset || "0" });
      if (body.dataset.tag) query.set("tag", body.dataset.tag);
      const response = await fetch("/jobs?" + query, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const page = await response.json();
      let changed = false;
      for (const job of page.data) {
        const row = document.querySelector('tr[data-job-id="' + job.id + '"]');
        if (!row) { changed = true; continue; }  // a job submitted since the page was drawn
        const wasActive = ACTIVE.has(row.querySelector(".state").textContent.trim());
        update(row, job);
        if (wasActive && !ACTIVE.has(job.state)) changed = true;
      }
      const active = page.data.some((job) => ACTIVE.has(job.state));
      if (changed || (active && Date.now() - loadedAt > CURVES_MS)) { window.location.reload(); return; }
      if (!active) return;
    } catch (error) {
      console.warn("job refresh failed, retrying:", error);
    }
    window.setTimeout(poll, POLL_MS);
  }

  window.setTimeout(poll, POLL_MS);
})();
