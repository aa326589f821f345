// Real WebRTC through Shoal: a WebTorrent seeder and leecher in two Node processes that can
// meet only through the WebSocket tracker; the bytes must arrive whole, over WebRTC.
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { seederSettled, seeders, until, within } from './shoal.mjs'

const here = dirname(fileURLToPath(import.meta.url))

/** Starts `node peer.mjs ...`; resolves with the process and its first stdout line. */
function peer (mode, url, dir) {
  const proc = spawn(process.execPath, [join(here, 'peer.mjs'), mode, url, dir], { stdio: ['ignore', 'pipe', 'pipe'] })
  const err = []
  createInterface({ input: proc.stderr }).on('line', l => err.push(l))
  const line = new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout }).once('line', resolve)
    proc.once('exit', code => reject(new Error(`${mode} exited (${code}): ${err.join(' | ')}`)))
  })
  return { proc, line, err, stop: () => { if (proc.exitCode === null) proc.kill('SIGKILL') } }
}

/** Seeds through `seedUrl`, leeches through `leechUrl`; the leecher's report, or throws.
 * With `shoal`, the leecher starts once the seeder has settled there (shoal.mjs,
 * `seederSettled`), and with `leechShoal` once that node counts the seeder too. */
export async function transfer (seedUrl, leechUrl, ms, shoal, leechShoal) {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-webrtc-'))
  const seeder = peer('seed', seedUrl, dir)
  let leecher
  try {
    const seeding = await within(20000, 'the seeder to start', seeder.line)
    const infoHash = seeding.split(' ')[1]
    if (shoal) await seederSettled(shoal, infoHash)
    if (leechShoal) await until('the leecher\'s node to count the seeder', 10000, async () => (await seeders(leechShoal, infoHash)) >= 1)
    leecher = peer('leech', leechUrl, dir)
    const report = JSON.parse(await within(ms, 'the leecher to finish', leecher.line).catch(err => {
      throw new Error(`${err.message}\n  seeder: ${seeder.err.slice(-8).join(' | ')}\n  leecher: ${leecher.err.slice(-8).join(' | ')}`)
    }))
    const same = readFileSync(join(dir, 'data.bin')).equals(readFileSync(join(dir, 'got', 'data.bin')))
    return { ...report, same }
  } finally {
    seeder.stop()
    leecher?.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

export async function webrtc (shoal, metrics) {
  const url = `${shoal.ws}/announce`
  const r = await transfer(url, url, 60000, shoal)
  const steps = []
  const check = (ok, what) => {
    if (!ok) throw new Error(`webrtc: ${what}: ${JSON.stringify(r)}`)
    steps.push(what)
  }
  check(r.same && r.length === 1 << 20, 'the leecher has the seeder\'s 1 MiB, byte for byte')
  check(r.byWire.webrtc === r.length && Object.keys(r.byWire).length === 1, 'every byte came over WebRTC')
  const text = await metrics(shoal)
  const relayed = name => Number((text.match(new RegExp(`^${name} (\\d+)`, 'm')) || [])[1] || 0)
  check(relayed('shoal_ws_offers_relayed_total') >= 1 && relayed('shoal_ws_answers_relayed_total') >= 1,
    'Shoal relayed the offer and its answer')
  return steps
}

/** The same peers with no tracker to meet at: the leecher must not finish. */
export async function negativeControl () {
  // A loopback port where nothing listens: both peers keep retrying the tracker.
  const nowhere = 'ws://127.0.0.1:9/announce'
  try {
    await transfer(nowhere, nowhere, 20000)
  } catch (err) {
    if (/timed out after 20000 ms: the leecher to finish/.test(err.message)) {
      return ['without a tracker the peers did not meet within 20 s']
    }
    throw err
  }
  throw new Error('negative control: the leecher finished without a tracker')
}
