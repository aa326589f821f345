// WebSocket tracker end-to-end runs against a built `shoal`:
//   node run.mjs --shoal target/debug/shoal [--only reference,webrtc,negative,browser]
// Every run is on loopback, bounded in time, and stops the processes it started.
import { parseArgs } from 'node:util'
import { startShoal } from './shoal.mjs'
import { referenceClient } from './reference.mjs'

const { values } = parseArgs({
  options: {
    shoal: { type: 'string', default: 'target/debug/shoal' },
    only: { type: 'string', default: 'reference' }
  }
})
const wanted = new Set(values.only.split(','))

const runs = {
  reference: async () => {
    const shoal = await startShoal(values.shoal)
    try {
      return await referenceClient(shoal)
    } finally {
      await shoal.stop()
    }
  }
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
