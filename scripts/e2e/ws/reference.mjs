// The reference client (`bittorrent-tracker`'s Client) against Shoal's ws://, as that
// package's own tests use it: stubbed offers, start/update/stop, scrape, several torrents
// on one pooled socket. Any 'warning' or 'error' the client emits fails the run: an error
// frame without `action` would make it drop its socket, and it would say so there.
import Client from 'bittorrent-tracker'
import { randomBytes } from 'node:crypto'
import { within } from './shoal.mjs'

function client (announce, infoHash, failures) {
  const c = new Client({
    infoHash,
    announce,
    peerId: Buffer.from(`-BT0001-${randomBytes(6).toString('hex')}`),
    port: 6881,
    wrtc: {}
  })
  // As the package's test/common.js does: offers that are never real.
  c._trackers[0]._generateOffers = (numwant, cb) => {
    const offers = []
    for (let i = 0; i < numwant; i++) offers.push({ fake_offer: `fake_offer_${i}` })
    process.nextTick(() => cb(offers))
  }
  c.on('warning', err => failures.push(`warning: ${err.message}`))
  c.on('error', err => failures.push(`error: ${err.message}`))
  return c
}

const once = (emitter, event) => new Promise(resolve => emitter.once(event, resolve))
const destroy = c => new Promise(resolve => c.destroy(resolve))

export async function referenceClient (shoal) {
  const failures = []
  const url = `${shoal.ws}/announce`
  const hash = () => randomBytes(20).toString('hex')
  const steps = []
  const check = (ok, what) => {
    if (!ok) throw new Error(`reference client: ${what}`)
    steps.push(what)
  }

  // start, a periodic update, stop: each answered with the swarm's numbers.
  const h1 = hash()
  const a = client(url, h1, failures)
  a.setInterval(500)
  a.start()
  let u = await within(5000, 'update after start', once(a, 'update'))
  check(u.announce === url && typeof u.complete === 'number' && typeof u.incomplete === 'number', 'start is answered with numbers')
  check(u.incomplete === 1, 'the leecher counts itself')
  a.setInterval(500) // the answer's interval replaced it, as in the package's own test
  u = await within(5000, 'update after the interval', once(a, 'update'))
  check(typeof u.complete === 'number', 'the interval brings another update')

  // Several torrents on the socket the client pools per URL; a scrape of both.
  const h2 = hash()
  const b = client(url, h2, failures)
  b.start()
  await within(5000, 'update of a second torrent on the pooled socket', once(b, 'update'))
  check(true, 'a second torrent on the pooled socket is answered')
  b.scrape()
  const s = await within(5000, 'scrape', once(b, 'scrape'))
  check(s.infoHash === h2 && s.incomplete === 1 && typeof s.downloaded === 'number', 'scrape answers complete, incomplete, downloaded')

  // A seeder on the first torrent: the leecher's numbers see it.
  const c = client(url, h1, failures)
  c.complete()
  await within(5000, 'update after completed', once(c, 'update'))
  a.update()
  u = await within(5000, 'update after the seeder joined', once(a, 'update'))
  check(u.complete === 1 && u.incomplete === 1, `one seeder, one leecher (got ${u.complete}, ${u.incomplete})`)

  a.stop()
  u = await within(5000, 'update after stop', once(a, 'update'))
  check(typeof u.complete === 'number', 'stop is answered')
  await Promise.all([destroy(a), destroy(b), destroy(c)])
  if (failures.length) throw new Error(`reference client reported: ${failures.join('; ')}`)
  return steps
}
