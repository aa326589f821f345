// Starts `shoal serve` on loopback ports for an end-to-end run and stops it by PID.
import { spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'

/** Starts Shoal with `extra` TOML appended; resolves once it logs "ready:". */
export function startShoal (bin, extra = '', { dir, name = 'shoal' } = {}) {
  dir = dir || mkdtempSync(join(tmpdir(), 'shoal-ws-e2e-'))
  const config = join(dir, `${name}.toml`)
  const db = extra.includes('[database]') ? '' : `[database]\nurl = "sqlite://${dir}/${name}.db"\nflush_interval_ms = 100\n`
  writeFileSync(config, `${db}[udp]\nbind = ["127.0.0.1:0"]\nworkers = 1\n[http]\nbind = ["127.0.0.1:0"]\n` +
    `[api]\nbind = "127.0.0.1:0"\ntoken = "e2e-token-0123456789"\n[ws]\nbind = ["127.0.0.1:0"]\n${extra}\n`)
  const proc = spawn(bin, ['serve', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'] })
  const shoal = { proc, dir, log: [], stop: () => stop(proc) }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`shoal not ready in 30 s:\n${shoal.log.join('\n')}`)), 30000)
    proc.on('exit', code => reject(new Error(`shoal exited (${code}):\n${shoal.log.join('\n')}`)))
    createInterface({ input: proc.stderr }).on('line', line => {
      shoal.log.push(line)
      const addr = line.split(' ').pop()
      if (/ws tracker listening on/.test(line)) shoal.ws = `ws://${addr}`
      if (/http tracker listening on/.test(line)) shoal.http = `http://${addr}`
      if (/admin api listening on/.test(line)) shoal.api = `http://${addr}`
      if (line.includes('ready:')) {
        clearTimeout(timer)
        resolve(shoal)
      }
    })
  })
}

function stop (proc) {
  return new Promise(resolve => {
    if (proc.exitCode !== null) return resolve(proc.exitCode)
    proc.once('exit', code => resolve(code))
    proc.kill('SIGTERM')
    setTimeout(() => proc.kill('SIGKILL'), 15000).unref()
  })
}

/** Rejects after `ms` with `what`, else resolves with `promise`. */
export function within (ms, what, promise) {
  let timer
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

export async function metrics (shoal) {
  const res = await fetch(`${shoal.api}/metrics`)
  return res.text()
}

/** Seeders of `infoHash` (hex) as the node's admin API counts them. */
export async function seeders (shoal, infoHash) {
  const res = await fetch(`${shoal.api}/api/v1/torrents/${infoHash}`, {
    headers: { authorization: 'Bearer e2e-token-0123456789' }
  })
  return res.ok ? (await res.json()).seeders : 0
}

/** Polls `ok` every 100 ms until it holds, or throws after `ms`. */
export async function until (what, ms, ok) {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (await ok()) return
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  throw new Error(`${what}: not within ${ms} ms`)
}

/** Resolves once a WebTorrent seeder is settled in Shoal: counted as a seeder, and its
 * two first announces in (`completed` without offers, then `started` with offers). A peer
 * that joins only then sends offers the seeder answers, and gets the seeder's own next
 * offers an interval later: two peers that dial each other at the same moment may each
 * drop a different connection and keep none. */
export function seederSettled (shoal, infoHash, ms = 20000) {
  const announces = /^shoal_requests_total\{protocol="ws",action="announce"\} (\d+)/m
  return until(`the seeder of ${infoHash} to settle`, ms, async () =>
    (await seeders(shoal, infoHash)) >= 1 &&
    Number(((await metrics(shoal)).match(announces) || [])[1] || 0) >= 2)
}
