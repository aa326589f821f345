// Real WebRTC across two nodes: the seeder's socket on node 1, the leecher's on node 2,
// one Redis and one PostgreSQL between them; the control gives each node its own Redis,
// and the leecher must not finish.
import { spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { startShoal, within } from './shoal.mjs'
import { transfer } from './webrtc.mjs'
import { download, pageServer } from './browser.mjs'

function freePort () {
  return new Promise(resolve => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

async function redis (dir) {
  const port = await freePort()
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' })
  await new Promise(resolve => setTimeout(resolve, 300))
  return { url: `redis://127.0.0.1:${port}`, stop: () => proc.kill('SIGTERM') }
}

async function postgres (dbserver) {
  const proc = spawn(dbserver, ['postgres', 'e2e', '--fast'], { stdio: ['pipe', 'pipe', 'inherit'] })
  const url = await within(60000, 'PostgreSQL from dbserver', new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout }).on('line', l => { if (l.startsWith('url=')) resolve(l.slice(4)) })
    proc.once('exit', code => reject(new Error(`dbserver exited (${code})`)))
  }))
  // dbserver serves until its stdin closes.
  return { url, stop: () => proc.stdin.end() }
}

/** Two nodes on `redisUrls[0]` and `redisUrls[1]` (one bus or two) and one database;
 * `ws` is more of the [ws] table. */
async function twoNodes (bin, dir, db, redisUrls, ws = '') {
  const nodes = []
  for (const [i, r] of redisUrls.entries()) {
    const extra = `${ws}[database]\nurl = "${db}"\nflush_interval_ms = 100\n` +
      `[cluster]\nredis_url = "${r}"\nnode_id = "ws-e2e-${i + 1}"\nsecret = "e2e"\n[log]\nlevel = "shoal=debug"\n`
    nodes.push(await startShoal(bin, extra, { dir, name: `n${i + 1}` }))
  }
  return nodes
}

async function across (bin, dbserver, shared) {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-ws-cluster-'))
  const buses = [await redis(dir)]
  if (!shared) buses.push(await redis(dir))
  const pg = await postgres(dbserver)
  let nodes = []
  try {
    nodes = await twoNodes(bin, dir, pg.url, shared ? [buses[0].url, buses[0].url] : buses.map(b => b.url))
    const [seed, leech] = nodes.map(n => `${n.ws}/announce`)
    return await transfer(seed, leech, shared ? 60000 : 20000, nodes[0], shared ? nodes[1] : null)
  } finally {
    for (const n of nodes) await n.stop()
    pg.stop()
    buses.forEach(b => b.stop())
  }
}

export async function cluster (bin, dbserver) {
  const r = await across(bin, dbserver, true)
  if (!(r.same && r.byWire.webrtc === r.length)) throw new Error(`across nodes: ${JSON.stringify(r)}`)
  return ['seeder on node 1, leecher on node 2: 1 MiB over WebRTC, byte for byte']
}

export async function clusterControl (bin, dbserver) {
  try {
    await across(bin, dbserver, false)
  } catch (err) {
    if (/timed out after 20000 ms: the leecher to finish/.test(err.message)) {
      return ['two nodes with no shared bus: the peers did not meet within 20 s']
    }
    throw err
  }
  throw new Error('cluster control: the leecher finished with no shared bus')
}

/** The browser's page on node 2, the Node seeder on node 1. */
export async function browserAcross (bin, dbserver) {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-ws-cluster-'))
  const bus = await redis(dir)
  const pg = await postgres(dbserver)
  const site = await pageServer()
  let nodes = []
  try {
    nodes = await twoNodes(bin, dir, pg.url, [bus.url, bus.url], `allowed_origins = ["${site.origin}"]\n`)
    const steps = await download(site, nodes[0], nodes[1])
    return steps.map(s => `seeder on node 1, page on node 2: ${s}`)
  } finally {
    for (const n of nodes) await n.stop()
    site.web.close()
    pg.stop()
    bus.stop()
  }
}
