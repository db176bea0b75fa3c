// A tiny offline IPFS node for Shoal's tests: Helia (no libp2p, no routing, blocks in memory)
// behind the subset of the Kubo HTTP RPC API that shared/ipfs.py uses:
//   POST /api/v0/version, /api/v0/add (multipart, Kubo's file/directory parts),
//   /api/v0/cat?arg=CID[/path], /api/v0/ls?arg=CID, /api/v0/files/stat?arg=/ipfs/CID
//
//   node server.mjs [--host 127.0.0.1] [--port 0]
//
// Prints one JSON line {"api": "http://HOST:PORT"} on stdout once it listens, and exits when
// stdin closes, so a test that dies never leaves it behind.
import http from 'node:http'
import { createHeliaLight } from 'helia'
import { unixfs } from '@helia/unixfs'
import { CID } from 'multiformats/cid'

const args = process.argv.slice(2)
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback
}
const host = option('host', '127.0.0.1')
const port = Number(option('port', '0'))

// createHeliaLight has no network at all: every block lives in this process's memory, and a
// missing one is an error at once instead of a search of the public network.
const helia = createHeliaLight()
await helia.start()
const fs = unixfs(helia)
const OFFLINE = { offline: true }

class ApiError extends Error {
  constructor (status, message) {
    super(message)
    this.status = status
  }
}

async function readBody (req) {
  const chunks = []
  for await (const chunk of req) chunks.push(chunk)
  return Buffer.concat(chunks)
}

// Split a multipart/form-data body into [{headers, body}]; test payloads are small, so the
// whole body is in memory.
function parseMultipart (body, contentType) {
  const match = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(contentType || '')
  if (!match) throw new ApiError(400, 'add: expected a multipart/form-data body')
  const delimiter = Buffer.from(`--${match[1] || match[2]}`)
  const parts = []
  let at = body.indexOf(delimiter)
  while (at >= 0) {
    const start = at + delimiter.length
    if (body.subarray(start, start + 2).toString() === '--') break
    const next = body.indexOf(delimiter, start)
    if (next < 0) break
    const raw = body.subarray(start + 2, next - 2) // drop the CRLF after the delimiter and before the next
    const split = raw.indexOf('\r\n\r\n')
    const headers = {}
    for (const line of raw.subarray(0, split).toString('utf8').split('\r\n')) {
      const colon = line.indexOf(':')
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
    }
    parts.push({ headers, body: raw.subarray(split + 4) })
    at = next
  }
  return parts
}

function partName (headers) {
  const disposition = headers['content-disposition'] || ''
  const match = /filename="([^"]*)"/i.exec(disposition) || /filename=([^;]+)/i.exec(disposition)
  if (!match) throw new ApiError(400, 'add: a part has no filename')
  return decodeURIComponent(match[1])
}

function parseCidPath (arg) {
  if (!arg) throw new ApiError(400, 'argument "ipfs-path" is required')
  const [root, ...rest] = arg.replace(/^\/ipfs\//, '').split('/')
  try {
    return { cid: CID.parse(root), path: rest.join('/') }
  } catch (err) {
    throw new ApiError(400, `invalid CID ${root}: ${err.message}`)
  }
}

async function stat (cid, path) {
  try {
    return await fs.stat(cid, { ...OFFLINE, ...(path ? { path } : {}) })
  } catch (err) {
    throw new ApiError(500, `${cid}${path ? '/' + path : ''}: ${err.message}`)
  }
}

const handlers = {
  async version (req, res) {
    json(res, { Version: 'helia-test-node', System: 'shoal-tests' })
  },

  async add (req, res, url) {
    const parts = parseMultipart(await readBody(req), req.headers['content-type'])
    const candidates = parts.map(({ headers, body }) => {
      const path = partName(headers)
      return (headers['content-type'] || '').startsWith('application/x-directory')
        ? { path }
        : { path, content: body }
    })
    const wrap = url.searchParams.get('wrap-with-directory') === 'true'
    const lines = []
    for await (const entry of fs.addAll(candidates, { wrapWithDirectory: wrap })) {
      lines.push(JSON.stringify({ Name: entry.path ?? '', Hash: entry.cid.toString(), Size: String(entry.size) }))
    }
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(lines.map((l) => l + '\n').join(''))
  },

  async cat (req, res, url) {
    const { cid, path } = parseCidPath(url.searchParams.get('arg'))
    const info = await stat(cid, path)
    if (info.type === 'directory') throw new ApiError(500, 'this dag node is a directory')
    res.writeHead(200, { 'content-type': 'text/plain', 'x-content-length': String(info.size) })
    for await (const chunk of fs.cat(cid, { ...OFFLINE, ...(path ? { path } : {}) })) {
      res.write(chunk)
    }
    res.end()
  },

  async ls (req, res, url) {
    const arg = url.searchParams.get('arg')
    const { cid, path } = parseCidPath(arg)
    const info = await stat(cid, path)
    const links = []
    if (info.type === 'directory') {
      for await (const entry of fs.ls(cid, { ...OFFLINE, ...(path ? { path } : {}) })) {
        const child = await stat(entry.cid, '')
        links.push({
          Name: entry.name,
          Hash: entry.cid.toString(),
          Size: Number(child.size),
          Type: child.type === 'directory' ? 1 : 2, // Kubo's unixfs types: 1 directory, 2 file
          Target: ''
        })
      }
    }
    json(res, { Objects: [{ Hash: arg, Links: links }] })
  },

  async 'files/stat' (req, res, url) {
    const arg = url.searchParams.get('arg') || ''
    if (!arg.startsWith('/ipfs/')) throw new ApiError(400, 'files/stat: only /ipfs/ paths are served')
    const { cid, path } = parseCidPath(arg)
    const info = await stat(cid, path)
    json(res, {
      Hash: info.cid.toString(),
      Size: Number(info.size),
      CumulativeSize: Number(info.size),
      Blocks: 0,
      Type: info.type === 'directory' ? 'directory' : 'file'
    })
  }
}

function json (res, value, status = 200) {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(value) + '\n')
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://localhost')
  const handler = handlers[url.pathname.replace(/^\/api\/v0\//, '')]
  try {
    // Kubo's RPC API answers POST only (405 otherwise); clients must not rely on GET.
    if (!url.pathname.startsWith('/api/v0/') || !handler) throw new ApiError(404, `${url.pathname}: not found`)
    if (req.method !== 'POST') throw new ApiError(405, `${req.method} not allowed`)
    await handler(req, res, url)
  } catch (err) {
    if (res.headersSent) {
      res.destroy(err)
      return
    }
    json(res, { Message: err.message, Code: 0, Type: 'error' }, err.status || 500)
  }
})

server.listen(port, host, () => {
  const { address, port: bound } = server.address()
  process.stdout.write(JSON.stringify({ api: `http://${address}:${bound}` }) + '\n')
})

process.stdin.resume()
process.stdin.on('end', async () => {
  server.close()
  await helia.stop()
  process.exit(0)
})
