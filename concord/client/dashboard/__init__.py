"""`concord dashboard`: a local web page that follows a Concord deployment live.

state.py    the one JSON document (status + timeline, reward curve, evidence), built from an
            incremental event index, the contract's views and IPFS by digest
server.py   a stdlib HTTP server: the page (static/, shipped in the package: no CDN), /api/state
static/     index.html, app.js, style.css (no framework; the charts are our own SVG)
"""
