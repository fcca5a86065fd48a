/**
 * What Helia 7's dependency tree takes from Node 22 and Node 20 lacks (the machine runs Node 20):
 * Promise.withResolvers (it-queue, @libp2p/utils, mortice). Imported by server.mjs before anything
 * else, so it is in place when those modules run. Each is defined only where missing, so on
 * Node 22 this module does nothing.
 */
if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers () {
      let resolve
      let reject
      const promise = new this((res, rej) => { resolve = res; reject = rej })
      return { promise, resolve, reject }
    }
  })
}
