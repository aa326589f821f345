// Real WebRTC in a real browser: Debian's chromium (headless, driven by playwright-core)
// loads a page from loopback that downloads from a Node WebTorrent seeder through Shoal's
// ws://. The page's origin is on Shoal's ws.allowed_origins; nothing may leave loopback.
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import bencode from 'bencode'
import { chromium } from 'playwright-core'
import { metrics, seederSettled, seeders, startShoal, until, within } from './shoal.mjs'

const here = dirname(fileURLToPath(import.meta.url))

const page = tracker => `<!doctype html>
<meta charset="utf-8"><title>shoal e2e</title>
<script type="module">
import WebTorrent from '/webtorrent.min.js'
const client = new WebTorrent({ tracker: { rtcConfig: { iceServers: [] } } })
client.on('error', e => { window.failed = String(e) })
client.on('warning', e => console.log('webtorrent warning: ' + e))
const torrent = new Uint8Array(await (await fetch('/data.torrent')).arrayBuffer())
client.add(torrent, { announce: [${JSON.stringify(tracker)}] }, t => {
  const byWire = {}
  t.on('warning', e => console.log('torrent warning: ' + e))
  t.on('noPeers', a => console.log('no peers from ' + a))
  t.on('wire', w => w.on('download', n => { byWire[w.type] = (byWire[w.type] || 0) + n }))
  t.on('done', async () => {
    const bytes = await t.files[0].arrayBuffer()
    const digest = await crypto.subtle.digest('SHA-256', bytes)
    const hex = [...new Uint8Array(digest)].map(b => b.toString(16).padStart(2, '0')).join('')
    window.result = { hex, length: bytes.byteLength, byWire }
  })
})
</script>`

/** A loopback HTTP server for the page, the bundle and the torrent file. */
function serve (files) {
  const server = createServer((req, res) => {
    const f = files[req.url]
    if (!f) return res.writeHead(404).end()
    res.writeHead(200, { 'content-type': f.type }).end(f.body())
  })
  return new Promise(resolve => server.listen(0, '127.0.0.1', () => resolve(server)))
}

/** The page's loopback server; `tracker` is set once the tracker is known. The torrent it
 * serves names no tracker: the page must know only its own node. */
export async function pageServer () {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-browser-'))
  const bundle = join(here, 'node_modules', 'webtorrent', 'dist', 'webtorrent.min.js')
  const site = { dir, tracker: null }
  const torrent = () => {
    const meta = bencode.decode(readFileSync(join(dir, 'data.torrent')))
    delete meta.announce
    delete meta['announce-list']
    return Buffer.from(bencode.encode(meta))
  }
  site.web = await serve({
    '/': { type: 'text/html', body: () => page(site.tracker) },
    '/webtorrent.min.js': { type: 'text/javascript', body: () => readFileSync(bundle) },
    '/data.torrent': { type: 'application/x-bittorrent', body: torrent },
    '/favicon.ico': { type: 'image/x-icon', body: () => '' }
  })
  site.origin = `http://127.0.0.1:${site.web.address().port}`
  return site
}

export async function browser (shoalBin) {
  const site = await pageServer()
  const shoal = await startShoal(shoalBin, `allowed_origins = ["${site.origin}"]\n[log]\nlevel = "shoal=debug"\n`)
  try {
    return await download(site, shoal, shoal)
  } finally {
    await shoal.stop()
    site.web.close()
  }
}

/** A Node seeder on `seedShoal`, the page in Chromium on `pageShoal` (the same node, or
 * another of the cluster). */
export async function download (site, seedShoal, pageShoal) {
  const { dir } = site
  const shoal = pageShoal
  site.tracker = `${pageShoal.ws}/announce`
  const seeder = spawn(process.execPath, [join(here, 'peer.mjs'), 'seed', `${seedShoal.ws}/announce`, dir], { stdio: ['ignore', 'pipe', 'inherit'] })
  let browserProc
  const steps = []
  const check = (ok, what) => {
    if (!ok) throw new Error(`browser: ${what}`)
    steps.push(what)
  }
  try {
    const seeding = await within(20000, 'the seeder to start', new Promise(resolve => createInterface({ input: seeder.stdout }).once('line', resolve)))
    // The page starts once the seeder has settled (shoal.mjs, `seederSettled`), and the
    // page's node counts it.
    const infoHash = seeding.split(' ')[1]
    await seederSettled(seedShoal, infoHash)
    await until('the page\'s node to count the seeder', 10000, async () => (await seeders(pageShoal, infoHash)) >= 1)
    browserProc = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-features=WebRtcHideLocalIpsWithMdns', '--allow-loopback-in-peer-connection',
        '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream']
    })
    // With camera and microphone allowed, chromium offers its 127.0.0.1 candidates.
    const context = await browserProc.newContext({ permissions: ['camera', 'microphone'] })
    if (process.env.SHOAL_E2E_DEBUG) {
      await context.addInitScript(() => {
        const Real = window.RTCPeerConnection
        window.RTCPeerConnection = function (...args) {
          const pc = new Real(...args)
          console.log('pc config ' + JSON.stringify(args[0]))
          pc.addEventListener('iceconnectionstatechange', () => console.log('ice ' + pc.iceConnectionState))
          const setRemote = pc.setRemoteDescription.bind(pc)
          pc.setRemoteDescription = d => { console.log('remote ' + d.sdp.split('\n').filter(l => l.includes('cand')).join(' ')); return setRemote(d) }
          const setLocal = pc.setLocalDescription.bind(pc)
          pc.setLocalDescription = d => { return setLocal(d).then(() => console.log('local ' + (pc.localDescription?.sdp || '').split('\n').filter(l => l.includes('cand')).join(' '))) }
          return pc
        }
        window.RTCPeerConnection.prototype = Real.prototype
      })
    }
    const tab = await context.newPage()
    const outside = []
    const errors = []
    tab.on('request', r => { if (!/^(https?|wss?):\/\/127\.0\.0\.1[:/]/.test(r.url()) && !r.url().startsWith('data:')) outside.push(r.url()) })
    const consoleLog = []
    tab.on('console', m => {
      consoleLog.push(`${m.type()}: ${m.text()}`)
      if (m.type() === 'error') errors.push(m.text())
    })
    tab.on('pageerror', e => errors.push(String(e)))
    await tab.goto(`${site.origin}/`)
    try {
      await tab.waitForFunction(() => window.result || window.failed, null, { timeout: 60000 })
    } catch (err) {
      const m = (await metrics(shoal)).split('\n').filter(l => /^shoal_(ws_|errors_total\{protocol="ws"|requests_total\{protocol="ws")/.test(l))
      throw new Error(`${err.message}\nconsole: ${consoleLog.join(' | ')}\nshoal: ${m.join(' | ')}\nshoal log: ${shoal.log.slice(-40).join('\n  ')}`)
    }
    const result = await tab.evaluate(() => window.result || { failed: window.failed })
    const want = createHash('sha256').update(readFileSync(join(dir, 'data.bin'))).digest('hex')
    check(result.hex === want && result.length === 1 << 20, `the page has the seeder's 1 MiB, byte for byte (${JSON.stringify(result)})`)
    check(result.byWire.webrtc === result.length, 'every byte came over WebRTC')
    check(outside.length === 0, `no request left loopback (${outside.join(', ')})`)
    check(errors.length === 0, `no console errors (${errors.join(' | ')})`)
  } finally {
    await browserProc?.close()
    if (seeder.exitCode === null) seeder.kill('SIGKILL')
  }
  return steps
}
