// The status page in a real browser: Debian's chromium (headless, playwright-core) opens
// Shoal's admin `/` while Shoal has just taken a short HTTP load, takes a screenshot, and
// reads what the page shows: the charts hold the load's shape (read from the SVG), the
// top-torrents table equals /api/v1/torrents ordered by peers, no console error, nothing
// requested beyond loopback.
//   node status.mjs --shoal target/debug/shoal --screenshot docs/status-page.png
// regenerates the picture in the docs.
import { parseArgs } from 'node:util'
import { chromium } from 'playwright-core'
import { startShoal } from './shoal.mjs'

const TOKEN = 'e2e-token-0123456789'
const TORRENTS = 25

const hashOf = i => i.toString(16).padStart(2, '0').repeat(20)
const bytes = hex => hex.match(/../g).map(b => '%' + b).join('')

/** `n` peers of torrent `t`, announced over HTTP; the number of announces. */
async function announce (shoal, t, n) {
  const clients = ['-qB4520-', '-TR4060-', '-LT2090-', 'M7-2-2--']
  for (let p = 0; p < n; p++) {
    const id = (clients[p % clients.length] + String(t * 100 + p).padStart(12, '0')).slice(0, 20)
    const left = p % 3 === 0 ? 0 : 1000
    const url = `${shoal.http}/announce?info_hash=${bytes(hashOf(t))}&peer_id=${encodeURIComponent(id)}&port=${10000 + p}&left=${left}&compact=1`
    const res = await fetch(url)
    if (!res.ok) throw new Error(`announce: ${res.status}`)
    await res.arrayBuffer()
  }
  return n
}

export async function statusPage (shoalBin, screenshot) {
  const shoal = await startShoal(shoalBin, '[status]\nsample_secs = 1\n[announce]\ninterval_jitter = 0.0\n')
  const steps = []
  const check = (ok, what) => {
    if (!ok) throw new Error(`status: ${what}`)
    steps.push(what)
  }
  let browser
  try {
    // The load: torrent t gets t peers (distinct counts, so the top 20 is one order), in
    // about two seconds, then three quiet seconds.
    await new Promise(resolve => setTimeout(resolve, 1500))
    let sent = 0
    for (let t = 1; t <= TORRENTS; t++) sent += await announce(shoal, t, t)
    await new Promise(resolve => setTimeout(resolve, 3500))

    browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] })
    const tab = await browser.newPage({ viewport: { width: 1200, height: 1000 } })
    const outside = []
    const errors = []
    tab.on('request', r => { if (!r.url().startsWith(`${shoal.api}/`) && !r.url().startsWith('data:')) outside.push(r.url()) })
    tab.on('console', m => { if (m.type() === 'error') errors.push(m.text()) })
    tab.on('pageerror', e => errors.push(String(e)))
    const res = await tab.goto(`${shoal.api}/`)
    check(res.status() === 200 && (await tab.title()) === 'Shoal status', 'the page loads with its title')
    if (screenshot) await tab.screenshot({ path: screenshot, fullPage: true })
    const shot = await tab.screenshot({ fullPage: true })
    check(shot.length > 10000, `a screenshot is taken (${shot.length} bytes)`)

    const series = await tab.$$eval('svg.chart polyline', ls => ls.map(l => ({
      protocol: l.closest('svg').dataset.protocol,
      action: l.dataset.action,
      values: l.dataset.values ? l.dataset.values.split(',').map(Number) : []
    })))
    const of = (p, a) => series.find(s => s.protocol === p && s.action === a)?.values || []
    const http = of('http', 'announce')
    const sum = http.reduce((a, b) => a + b, 0)
    check(Math.round(sum) === sent, `the HTTP announce chart adds up to the ${sent} announces sent (${Math.round(sum)})`)
    const busy = http.findIndex(v => v > 0)
    const lastBusy = http.length - 1 - [...http].reverse().findIndex(v => v > 0)
    check(busy >= 0 && http.slice(lastBusy + 1).length >= 2 && http.slice(lastBusy + 1).every(v => v === 0),
      `the chart holds the load's shape: busy from sample ${busy} to ${lastBusy}, quiet after (${http.join(' ')})`)
    check(of('udp', 'announce').every(v => v === 0) && of('ws', 'announce').every(v => v === 0),
      'the UDP and WebSocket charts stay flat: no load went there')

    const table = await tab.$$eval('#top-torrents tbody tr', rows => rows.map(r => [...r.cells].map(c => c.textContent)))
    const api = await (await fetch(`${shoal.api}/api/v1/torrents?limit=1000`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()
    const want = api.torrents
      .map(t => ({ ...t, peers: t.seeders + t.leechers }))
      .sort((a, b) => b.peers - a.peers || a.info_hash.localeCompare(b.info_hash))
      .slice(0, 20)
      .map(t => [t.info_hash, String(t.seeders), String(t.leechers)])
    const got = table.map(r => r.slice(0, 3))
    check(JSON.stringify(got) === JSON.stringify(want), `the top-torrents table equals /api/v1/torrents by peers (${got.length} rows)`)
    const clients = await tab.$$eval('#clients tbody tr', rows => rows.map(r => r.cells[0].textContent))
    check(['qBittorrent', 'Transmission', 'libtorrent', 'Mainline'].every(c => clients.includes(c)), `clients are named (${clients.join(', ')})`)
    check(outside.length === 0, `no request left loopback (${outside.join(', ')})`)
    check(errors.length === 0, `no console errors (${errors.join(' | ')})`)
  } finally {
    await browser?.close()
    await shoal.stop()
  }
  return steps
}

if (process.argv[1] && process.argv[1].endsWith('status.mjs')) {
  const { values } = parseArgs({ options: { shoal: { type: 'string', default: 'target/debug/shoal' }, screenshot: { type: 'string' } } })
  for (const s of await statusPage(values.shoal, values.screenshot)) console.log(`  ok  ${s}`)
}
