// WebSocket tracker end-to-end runs against a built `shoal`:
//   node run.mjs --shoal target/debug/shoal [--dbserver target/debug/dbserver]
//                [--only reference,webrtc,negative,browser,cluster,cluster-control,browser-cluster,status]
// (browser needs Debian's chromium, or CHROMIUM=/path/to/chromium)
// Every run is on loopback, bounded in time, and stops the processes it started.
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { metrics, startShoal } from './shoal.mjs'
import { referenceClient } from './reference.mjs'
import { negativeControl, webrtc } from './webrtc.mjs'
import { browser } from './browser.mjs'
import { browserAcross, cluster, clusterControl } from './cluster.mjs'
import { statusPage } from './status.mjs'

const { values } = parseArgs({
  options: {
    shoal: { type: 'string', default: 'target/debug/shoal' },
    dbserver: { type: 'string', default: 'target/debug/dbserver' },
    only: { type: 'string', default: 'reference,webrtc,negative,browser,cluster,cluster-control,browser-cluster,status' }
  }
})
const wanted = new Set(values.only.split(','))

// Every temporary file of the run (ours, Shoal's databases, the peers' and Chromium's) goes
// under one directory, removed when the run ends, however it ends.
const scratch = mkdtempSync(join(tmpdir(), 'shoal-ws-run-'))
// Database servers started for a run (testkit) run as their own user: they must reach it.
chmodSync(scratch, 0o755)
process.env.TMPDIR = scratch
process.on('exit', () => rmSync(scratch, { recursive: true, force: true }))

/** Runs `f` against a Shoal started for it, and stops that Shoal. */
async function withShoal (f, extra = '') {
  const shoal = await startShoal(values.shoal, extra)
  try {
    return await f(shoal)
  } catch (err) {
    throw new Error(`${err.message}\n  shoal log: ${shoal.log.slice(-30).join('\n    ')}`)
  } finally {
    await shoal.stop()
  }
}

const runs = {
  reference: () => withShoal(referenceClient),
  webrtc: () => withShoal(shoal => webrtc(shoal, metrics), '[log]\nlevel = "shoal=debug"\n'),
  negative: negativeControl,
  browser: () => browser(values.shoal),
  cluster: () => cluster(values.shoal, values.dbserver),
  'cluster-control': () => clusterControl(values.shoal, values.dbserver),
  'browser-cluster': () => browserAcross(values.shoal, values.dbserver),
  status: () => statusPage(values.shoal)
}

let failed = false
for (const [name, run] of Object.entries(runs)) {
  if (!wanted.has(name)) continue
  const started = Date.now()
  try {
    const steps = await run()
    for (const s of steps) console.log(`  ok  ${s}`)
    console.log(`ws e2e ${name}: ok (${((Date.now() - started) / 1000).toFixed(1)} s)`)
  } catch (err) {
    failed = true
    console.log(`ws e2e ${name}: FAILED: ${err.stack || err}`)
  }
}
process.exit(failed ? 1 : 0)
