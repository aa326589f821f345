// WebSocket tracker end-to-end runs against a built `shoal`:
//   node run.mjs --shoal target/debug/shoal [--only reference,webrtc,negative,browser]
// Every run is on loopback, bounded in time, and stops the processes it started.
import { parseArgs } from 'node:util'
import { metrics, startShoal } from './shoal.mjs'
import { referenceClient } from './reference.mjs'
import { negativeControl, webrtc } from './webrtc.mjs'

const { values } = parseArgs({
  options: {
    shoal: { type: 'string', default: 'target/debug/shoal' },
    only: { type: 'string', default: 'reference,webrtc,negative' }
  }
})
const wanted = new Set(values.only.split(','))

/** Runs `f` against a Shoal started for it, and stops that Shoal. */
async function withShoal (f, extra = '') {
  const shoal = await startShoal(values.shoal, extra)
  try {
    return await f(shoal)
  } finally {
    await shoal.stop()
  }
}

const runs = {
  reference: () => withShoal(referenceClient),
  webrtc: () => withShoal(shoal => webrtc(shoal, metrics)),
  negative: negativeControl
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
