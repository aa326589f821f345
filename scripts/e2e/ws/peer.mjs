// One WebTorrent peer in Node that can meet others only through the WebSocket tracker:
// DHT, local discovery, PEX, uTP and NAT traversal off; WebRTC on loopback.
//   node peer.mjs seed  <tracker-url> <dir>   writes <dir>/data.bin and <dir>/data.torrent,
//                                             prints "seeding", runs until killed
//   node peer.mjs leech <tracker-url> <dir>   downloads <dir>/data.torrent into <dir>/got/,
//                                             prints one JSON line of what came over which wire
//   node peer.mjs seed-torrent <tracker-url> <torrent> <data-dir>
//                                             seeds a torrent whose data is in <data-dir>
//                                             (verified first), prints "seeding", runs until killed
import bencode from 'bencode'
import WebTorrent from 'webtorrent'
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const [mode, url, dir] = process.argv.slice(2)
const client = new WebTorrent({
  dht: false,
  lsd: false,
  utPex: false,
  utp: false,
  natUpnp: false,
  natPmp: false,
  webSeeds: false,
  // Without a bind address the WebRTC stack offers only the machine's other interfaces.
  tracker: { rtcConfig: { iceServers: [], bindAddress: '127.0.0.1' } }
})
client.on('torrent', t => {
  t.on('warning', w => console.error(`warning: ${w.message || w}`))
  t.on('wire', w => console.error(`wire ${w.type} ${w.remoteAddress || ''}`))
})
client.on('error', err => {
  console.error(`webtorrent: ${err.message}`)
  process.exit(2)
})

if (mode === 'seed-torrent') {
  const [torrentPath, dataDir] = process.argv.slice(4)
  client.add(readFileSync(torrentPath), { announce: [url], path: dataDir }, torrent => {
    const ready = () => console.log(`seeding ${torrent.infoHash}`)
    if (torrent.done) ready()
    else torrent.once('done', ready)
  })
} else if (mode === 'seed') {
  const data = randomBytes(1 << 20)
  writeFileSync(join(dir, 'data.bin'), data)
  client.seed(join(dir, 'data.bin'), { announce: [url], name: 'data.bin' }, torrent => {
    writeFileSync(join(dir, 'data.torrent'), torrent.torrentFile)
    console.log(`seeding ${torrent.infoHash}`)
  })
} else {
  const out = join(dir, 'got')
  mkdirSync(out, { recursive: true })
  // The torrent names the seeder's tracker: drop it, so this peer knows only `url` (a run
  // across nodes must not let the leecher reach the seeder's node).
  const meta = bencode.decode(readFileSync(join(dir, 'data.torrent')))
  delete meta.announce
  delete meta['announce-list']
  client.add(Buffer.from(bencode.encode(meta)), { announce: [url], path: out }, torrent => {
    if (torrent.announce.some(a => a !== url)) {
      console.error(`leecher knows other trackers: ${torrent.announce}`)
      process.exit(3)
    }
    const byWire = {}
    const count = wire => wire.on('download', n => { byWire[wire.type] = (byWire[wire.type] || 0) + n })
    torrent.wires.forEach(count)
    torrent.on('wire', count)
    torrent.on('done', () => {
      console.log(JSON.stringify({ infoHash: torrent.infoHash, length: torrent.length, byWire }))
      client.destroy(() => process.exit(0))
    })
  })
}
