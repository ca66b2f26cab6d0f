import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { HostNotAllowed } from '../errors.js'

export interface HostsOptions {
  // Host header values (names, without the port) the bus answers besides the loopback names.
  allowed: string[]
  // Whether the bus listens on loopback only: then only loopback names and `allowed` are accepted.
  loopback: boolean
}

const LOOPBACK_NAME = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/i

// DNS rebinding: a web page whose name an attacker rebinds to 127.0.0.1 can make the browser talk to a bus on
// loopback, register an agent and message every agent (prompt injection into AI agents). The page's requests
// still carry its own name in Host, so a bus on loopback answers only loopback names and the names it is told
// (BUS_ALLOWED_HOSTS). A bus on another address checks only when BUS_ALLOWED_HOSTS is set.
const hosts: FastifyPluginAsync<HostsOptions> = async (app, { allowed, loopback }) => {
  if (!loopback && allowed.length === 0) {
    // The bus cannot know its public names; but a wildcard HOST answers on 127.0.0.1 too, where a rebinding page reaches it.
    app.log.warn('no Host check: set BUS_ALLOWED_HOSTS to the names clients use, so a web page cannot reach the bus by DNS rebinding')
    return
  }
  const names = new Set(allowed.map((h) => h.toLowerCase()))
  app.addHook('onRequest', async (request) => {
    const host = request.host
    // The name without its port ([::1]:8091 keeps its brackets).
    const name = host.replace(/:\d+$/, '').toLowerCase()
    if ((loopback && LOOPBACK_NAME.test(name)) || names.has(name)) return
    throw new HostNotAllowed(name.slice(0, 100))
  })
}

export default fp(hosts, { name: 'hosts', fastify: '5.x' })
