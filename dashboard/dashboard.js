// The agent-bus dashboard: reads GET /dashboard/events (server-sent snapshots) and renders them. No build step, no
// framework; uPlot draws the chart. Every value from the bus is set as text, never as HTML: subjects and names are
// written by agents.
'use strict'

const TOKEN_KEY = 'agent-bus-dashboard-token'
const $ = (id) => document.getElementById(id)
const status = $('status')
let chart

function setStatus (state, text) {
  status.dataset.state = state
  status.textContent = text
}

// A row of cells: each cell is text, or [text, className].
function rows (table, items, cells, empty) {
  const body = table.tBodies[0]
  const fresh = document.createElement('tbody')
  if (items.length === 0) {
    const tr = fresh.insertRow()
    tr.className = 'empty'
    const td = tr.insertCell()
    td.colSpan = table.tHead.rows[0].cells.length
    td.textContent = empty
  }
  for (const item of items) {
    const tr = fresh.insertRow()
    for (const cell of cells(item)) {
      const td = tr.insertCell()
      const [text, cls] = Array.isArray(cell) ? cell : [cell, '']
      td.textContent = text
      if (cls) td.className = cls
    }
  }
  table.replaceChild(fresh, body)
}

function ago (iso) {
  if (!iso) return 'never'
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000))
  if (s < 60) return `${s} s ago`
  if (s < 3600) return `${Math.round(s / 60)} min ago`
  if (s < 86400) return `${Math.round(s / 3600)} h ago`
  return new Date(iso).toLocaleDateString()
}

function due (iso) {
  if (!iso) return ''
  const s = Math.round((Date.parse(iso) - Date.now()) / 1000)
  if (s <= 0) return 'due now'
  return s < 60 ? `in ${s} s` : s < 3600 ? `in ${Math.round(s / 60)} min` : `in ${Math.round(s / 3600)} h`
}

function bytes (n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++ }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`
}

function recipients (m) {
  if (m.topic) return `topic ${m.topic}`
  if (m.queue) return `queue ${m.queue}`
  if (m.to === null) return 'everyone'
  return m.to.join(', ')
}

// Stacked bars: each series is drawn from zero to the sum of itself and the ones below it (urgent at the bottom),
// largest first; the legend shows each priority's own count.
function drawChart (traffic) {
  const { normal, high, urgent } = traffic
  const raw = [null, normal, high, urgent]
  const data = [traffic.minutes, normal.map((n, i) => n + high[i] + urgent[i]), high.map((h, i) => h + urgent[i]), urgent]
  const box = $('chart')
  const width = Math.max(280, box.clientWidth)
  if (chart) {
    chart.raw = raw
    chart.setData(data)
    if (Math.abs(chart.width - width) > 4) chart.setSize({ width, height: 220 })
    return
  }
  const bars = uPlot.paths.bars({ size: [0.8, 40] })
  const own = (u, value, series, i) => i === null || u.raw[series] === null ? '--' : String(u.raw[series][i])
  const series = (label, stroke, fill) => ({ label, stroke, fill, paths: bars, points: { show: false }, value: own })
  chart = new uPlot({
    width,
    height: 220,
    scales: { x: { time: true } },
    axes: [{}, { label: 'messages / min', size: 60 }],
    series: [{}, series('normal', '#528bff', 'rgba(82,139,255,0.6)'), series('high', '#f79009', 'rgba(247,144,9,0.75)'), series('urgent', '#f04438', 'rgba(240,68,56,0.85)')]
  }, data, box)
  chart.raw = raw
}

function render (s) {
  $('t-online').textContent = s.totals.online
  $('t-agents').textContent = s.totals.agents
  $('t-messages').textContent = s.totals.messages
  $('t-unread').textContent = s.totals.unread
  $('t-webhooks').textContent = s.totals.webhooks_pending
  $('t-size').textContent = bytes(s.bus.size_bytes)
  $('t-engine').textContent = `${s.bus.engine}, schema ${s.bus.schema_version}`
  $('agents-more').textContent = s.more_agents ? `(first ${s.agents.length} of ${s.totals.agents})` : ''
  rows($('agents'), s.agents, (a) => [a.name, [a.status, a.status], ago(a.last_seen_at), [String(a.unread), 'num']], 'No agents registered yet.')
  rows($('latest'), s.latest, (m) => [
    [String(m.id), 'num'], m.from, recipients(m), [m.subject ?? '', 'subject'], [m.priority, `p-${m.priority}`],
    m.queue ? (m.acked ? 'acked' : 'queued') : `${m.delivered}/${m.copies}`,
    m.queue ? '' : `${m.read}/${m.copies}`,
    ago(m.created_at)
  ], 'No messages yet.')
  rows($('webhooks'), s.failing_webhooks, (w) => [w.agent, w.host ?? '', [String(w.pending), 'num'], [String(w.attempts), 'num'], due(w.next_at)], 'None failing.')
  rows($('topics'), s.topics, (t) => [t.name, [String(t.subscribers), 'num']], 'No topics.')
  rows($('queues'), s.queues, (q) => [q.name, [String(q.available), 'num'], [String(q.delayed), 'num'], [String(q.leased), 'num'], [String(q.dead), q.dead > 0 ? 'num p-urgent' : 'num']], 'No queues.')
  drawChart(s.traffic)
  $('board').hidden = false
  $('login').hidden = true
  setStatus('live', `live · ${new Date(s.at).toLocaleTimeString()}`)
}

function askToken (why) {
  $('login-why').textContent = why
  $('login').hidden = false
  $('board').hidden = true
  setStatus('error', 'token needed')
}

// EventSource cannot send an Authorization header: the stream is read with fetch, and its events parsed here.
async function connect () {
  const token = sessionStorage.getItem(TOKEN_KEY)
  $('forget').hidden = token === null
  const headers = { accept: 'text/event-stream' }
  if (token !== null) headers.authorization = `Bearer ${token}`
  let res
  try {
    res = await fetch('/dashboard/events', { headers, cache: 'no-store' })
  } catch {
    return retry('bus unreachable')
  }
  if (res.status === 401 || res.status === 403) {
    const body = await res.json().catch(() => ({}))
    if (token !== null) sessionStorage.removeItem(TOKEN_KEY)
    return askToken(token === null
      ? 'This bus needs the admin token (BUS_ADMIN_TOKEN) or the metrics token (BUS_METRICS_TOKEN).'
      : `That token was refused: ${body.message ?? res.status}`)
  }
  if (!res.ok || res.body === null) return retry(`status ${res.status}`)
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  try {
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      buffer += value
      let end
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end)
        buffer = buffer.slice(end + 2)
        const data = block.split('\n').filter((line) => line.startsWith('data:')).map((line) => line.slice(5).replace(/^ /, '')).join('\n')
        if (data !== '') render(JSON.parse(data))
      }
    }
  } catch {}
  retry('connection lost')
}

function retry (why) {
  setStatus('error', `${why}; retrying…`)
  setTimeout(connect, 2000)
}

$('login').addEventListener('submit', (event) => {
  event.preventDefault()
  sessionStorage.setItem(TOKEN_KEY, $('token').value.trim())
  $('token').value = ''
  setStatus('connecting', 'connecting…')
  connect()
})
$('forget').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY)
  location.reload()
})
window.addEventListener('resize', () => { if (chart) chart.setSize({ width: Math.max(280, $('chart').clientWidth), height: 220 }) })
connect()
