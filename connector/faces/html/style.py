"""The page's inline CSS: a table row becomes a card on a narrow screen."""

CSS = """
:root { color-scheme: light; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700;
  --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --panel: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; color: var(--ink); background: #fff;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1200px; margin: 0 auto; }
h1 { font-size: 20px; margin: 0 0 14px; color: var(--muted); font-weight: 600; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); }
h2 .n { color: var(--muted); font-weight: 400; }
.verdict { border-radius: 8px; padding: 16px 20px; border: 2px solid; }
.verdict.healthy { border-color: var(--ok); background: #dafbe1; }
.verdict.attention { border-color: var(--bad); background: #ffebe9; }
.verdict .headline { font-size: 28px; font-weight: 700; margin: 0; }
.verdict.healthy .headline { color: var(--ok); }
.verdict.attention .headline { color: var(--bad); }
.verdict ul { margin: 8px 0 0; padding-left: 22px; font-size: 16px; }
.verdict p.sub { margin: 6px 0 0; font-size: 16px; }
.counts { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr));
  gap: 12px; margin: 20px 0 8px; }
.count { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 12px 16px; }
.count .figure { font-size: 40px; font-weight: 700; line-height: 1.1;
  font-variant-numeric: tabular-nums; }
.count .label { font-size: 15px; font-weight: 600; text-transform: uppercase;
  letter-spacing: .04em; color: var(--muted); }
.count .hint { font-size: 13px; color: var(--muted); }
.count.alert { border-color: var(--bad); background: #fff5f5; }
.count.alert .figure, .count.alert .label { color: var(--bad); }
.count[data-state="synced"] .figure { color: var(--ok); }
.facts dl { display: flex; flex-wrap: wrap; gap: 8px 40px; margin: 12px 0 0; }
.facts dt { font-size: 13px; color: var(--muted); }
.facts dd { margin: 0; font-size: 16px; font-weight: 600; }
.stale, td.bad { color: var(--bad); font-weight: 600; }
figure { margin: 0; }
.chart { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px 6px;
  background: #fff; }
.chart .legend { display: flex; flex-wrap: wrap; gap: 4px 18px; font-size: 14px;
  margin-bottom: 6px; }
.chart .key { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
  margin-right: 6px; vertical-align: -1px; }
.key.synced, .bar.synced { background: var(--ok); }
.key.failed, .bar.failed { background: var(--bad); }
.key.open { background: #f5d48b; border: 1px solid var(--warn); }
.chart .days { display: flex; align-items: stretch; gap: 2px; }
.chart .day { flex: 1 1 0; min-width: 0; display: flex; flex-direction: column; }
.chart .day.weekend .plot { background: #f6f8fa; }
.chart .figures { display: flex; flex-direction: column; align-items: center;
  font-size: 12px; line-height: 15px; font-variant-numeric: tabular-nums; white-space: nowrap; }
.chart .figure { min-height: 15px; }
.chart .figure.synced { color: var(--ok); }
.chart .figure.failed { color: var(--bad); font-weight: 700; }
.chart .plot { height: 160px; display: flex; align-items: flex-end; justify-content: center;
  gap: 1px; border-bottom: 1.5px solid #8c959f; }
.chart .bar { width: 42%; max-width: 16px; border-radius: 2px 2px 0 0; height: var(--h); }
.chart .backlog { height: 20px; margin-top: 3px; font-size: 12px; line-height: 20px;
  text-align: center; color: var(--muted); border-radius: 3px; }
.chart .backlog.some { background: #fff1cc; color: var(--warn); font-weight: 600; }
.chart .backlog.many { background: #f5d48b; }
.chart .date { font-size: 12px; text-align: center; color: var(--muted); line-height: 15px;
  padding-top: 2px; font-variant-numeric: tabular-nums; }
.chart .month { display: block; font-weight: 600; color: var(--ink); }
.chart .month.phone-first { display: none; }
.days-phone { display: none; }
figcaption { font-size: 13px; color: var(--muted); margin-top: 4px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; vertical-align: top; padding: 6px 10px;
  border-bottom: 1px solid var(--line); }
thead th { background: var(--panel); font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fbfcfd; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.nowrap { white-space: nowrap; }
.wrap { overflow-wrap: anywhere; }
td.id { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
td.why { min-width: 200px; }
td.action { min-width: 300px; }
@media (max-width: 700px) {
  body { padding: 12px 10px 32px; }
  h2 { font-size: 17px; }
  .verdict .headline { font-size: 24px; }
  .counts { grid-template-columns: repeat(auto-fit, minmax(96px, 1fr)); gap: 8px; }
  .count { padding: 8px 10px; }
  .count .figure { font-size: 28px; }
  .count .label { font-size: 13px; }
  .count .hint { font-size: 12px; }
  .facts dl { gap: 8px 24px; }
  .chart { padding: 8px 6px 4px; }
  .chart .day.old { display: none; }
  .chart .month.phone-first { display: block; }
  .chart .bar { height: var(--h-recent); }
  .chart .figures, .chart .backlog, .chart .date { font-size: 11px; }
  .chart .legend { font-size: 13px; }
  .days-desktop { display: none; }
  .days-phone { display: inline; }
  .scroll { overflow-x: visible; }
  table.cards, table.cards tbody, table.cards tr, table.cards td { display: block; }
  table.cards thead { position: absolute; width: 1px; height: 1px; overflow: hidden;
    clip: rect(0 0 0 0); }
  table.cards tr { border: 1px solid var(--line); border-radius: 8px; margin: 0 0 10px;
    padding: 4px 10px; background: #fff; }
  table.cards tbody tr:nth-child(even) { background: #fff; }
  table.cards td { border: 0; padding: 3px 0 3px 8.5em; position: relative; min-width: 0;
    text-align: left; white-space: normal; overflow-wrap: anywhere; }
  table.cards td::before { content: attr(data-label); position: absolute; left: 0; top: 3px;
    width: 8.5em; color: var(--muted); white-space: nowrap;
    font: 600 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
    overflow: hidden; text-overflow: ellipsis; }
  table.cards td.why, table.cards td.action, table.cards td.wrap { padding-left: 0; }
  table.cards td.why::before, table.cards td.action::before, table.cards td.wrap::before {
    position: static; display: block; width: auto; }
  table.cards td:empty { display: none; }
  code { white-space: normal; overflow-wrap: anywhere; }
}
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px;
  background: #eff1f3; padding: 1px 4px; border-radius: 4px; white-space: nowrap; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 13px;
  font-weight: 600; background: #eaeef2; }
.badge.outcome-ok { background: #dafbe1; color: var(--ok); }
.badge.outcome-failed, .badge.outcome-aborted,
.badge.outcome-degraded { background: #ffebe9; color: var(--bad); }
.badge.outcome-interrupted, .badge.outcome-running,
.badge.outcome-day-limit { background: #fff8c5; color: var(--warn); }
p.none { color: var(--muted); margin: 6px 0; }
footer { margin-top: 36px; font-size: 13px; color: var(--muted); }
@media print { body { padding: 0; } .scroll { overflow: visible; } }
"""
