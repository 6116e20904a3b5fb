"""Load-balancing strategies for upstream groups: one plugin per strategy.

A ``[[groups]]`` entry names its strategy by plugin instance; the kernel
calls that instance's ``trellis_balancer(group)`` once when it builds the
group, and the returned balancer's ``pick(flow, candidates)`` for every
request (see :class:`sdk.Balancer`). ``candidates`` are the targets that
may be used now, in group order: a target that is down, drained or
already tried by this request is left out, and every strategy spreads
over what is left.

- ``roundrobin``: each target in turn, ignoring weights.
- ``weighted``: nginx's smooth weighted round-robin: exact proportions,
  interleaved.
- ``random``: a weighted random draw (``seed`` makes it reproducible).
- ``leastconn``: fewest requests in flight per unit of weight; ties take
  turns.
- ``p2c``: the power of two choices: of two random targets, the one with
  the lower latency EWMA x (requests in flight + 1) / weight.
- ``hash``: consistent hashing of the client IP, the path, a header or a
  cookie, on a ring (``vnodes``) or a Maglev table (``table_size``).

Only ``random``, ``p2c`` and ``hash`` take options; any strategy can be
used under several names (``hash.byuser``)::

    [[groups]]
    name = "app"
    # strategy names a plugin instance: roundrobin, weighted, random,
    # leastconn, p2c, hash, hash.byuser ...
    strategy = "hash"
    [plugins.hash]
    key = "cookie:session"
    algorithm = "maglev"

Each balancer keeps its state per group (a cursor, current weights, a
random generator, hash tables) and is fresh for every new or changed group.

Empty on purpose: the entry points name the strategy modules themselves,
so one strategy does not import the others.

May import: nothing.
"""
