// js-ipfs 0.66 pulls in it-queue, whose newest release calls Promise.withResolvers (Node 22+).
// Node 20 (Debian bookworm's) lacks it; define it before js-ipfs loads.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
