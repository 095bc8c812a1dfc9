/*
 * fastscan.c - the load generator's per-event loop, in C.
 *
 * Once oro-sync sent events faster than one core of Python subscribers could
 * parse them, the benchmark measured its own clients.  bench/wampbench.py
 * compiles this file (gcc -O2 -shared) and hands every subscriber's received
 * bytes to ws_scan(); asyncio still does the I/O, the handshakes and every
 * message that is not an event.  Without a C compiler the same loop runs in
 * Python (slower; the report's client CPU column shows it).
 *
 * ws_scan walks the unmasked server frames in buf[pos:n].  For each data frame
 * it finds the event's [ts_ns, seq, step, ...] list (the last '[' of the
 * payload, as the Python loop does), counts it in counts[step], sets
 * first[step] (on the step's first event) and last[step] to now, and, when
 * lat is given, appends (step, now - ts) to lat.  It stops at the first
 * incomplete frame, or at a control frame or a data frame that is not an event,
 * which the caller handles itself.
 *
 * ws_scan_msgpack does the same for wamp.2.msgpack subscribers: their events
 * are binary frames holding [36, sub, pub, {}, [ts_ns, seq, step, pad]] in
 * MessagePack, read by parse_msgpack_event.
 *
 * out[0] = latency pairs written, out[1] = status: 0 need more bytes,
 * 1 the frame at the returned position is for the caller, 2 a masked frame
 * (a protocol error), 3 lat is full (drain it and call again).  Returns the
 * position reached.
 */
#include <stdint.h>

static int parse_int(const unsigned char *p, const unsigned char *end, const unsigned char **next, int64_t *v)
{
    while (p < end && *p == ' ')
        p++;
    int neg = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end || *p < '0' || *p > '9')
        return 0;
    int64_t x = 0;
    while (p < end && *p >= '0' && *p <= '9')
        x = x * 10 + (*p++ - '0');
    while (p < end && *p == ' ')
        p++;
    if (p >= end || *p != ',')
        return 0;
    *v = neg ? -x : x;
    *next = p + 1;
    return 1;
}

/* One MessagePack integer at *p (fixints, uint8..64, int8..64). */
static int mp_int(const unsigned char **pp, const unsigned char *end, int64_t *v)
{
    const unsigned char *p = *pp;
    if (p >= end)
        return 0;
    unsigned t = *p++;
    int nbytes = 0, sign = 0;
    if (t < 0x80) {
        *v = t;
        *pp = p;
        return 1;
    }
    if (t >= 0xe0) {
        *v = (int64_t)(int8_t)t;
        *pp = p;
        return 1;
    }
    switch (t) {
    case 0xcc: nbytes = 1; break;
    case 0xcd: nbytes = 2; break;
    case 0xce: nbytes = 4; break;
    case 0xcf: nbytes = 8; break;
    case 0xd0: nbytes = 1; sign = 1; break;
    case 0xd1: nbytes = 2; sign = 1; break;
    case 0xd2: nbytes = 4; sign = 1; break;
    case 0xd3: nbytes = 8; sign = 1; break;
    default: return 0;
    }
    if (end - p < nbytes)
        return 0;
    uint64_t x = 0;
    for (int i = 0; i < nbytes; i++)
        x = (x << 8) | p[i];
    if (sign && nbytes < 8 && (x >> (8 * nbytes - 1)))
        x |= ~(uint64_t)0 << (8 * nbytes);
    *v = (int64_t)x;
    *pp = p + nbytes;
    return 1;
}

/* [36, sub, pub, {}, [ts, seq, step, ...]] in MessagePack (Details empty). */
static int parse_msgpack_event(const unsigned char *p, const unsigned char *e,
                               int64_t *ts, int64_t *seq, int64_t *step)
{
    int64_t ignored;
    if (e - p < 4 || p[0] != 0x95 || p[1] != 0x24)
        return 0;
    p += 2;
    if (!mp_int(&p, e, &ignored) || !mp_int(&p, e, &ignored))
        return 0;
    if (e - p < 2 || p[0] != 0x80 || (p[1] & 0xf0) != 0x90 || (p[1] & 0x0f) < 3)
        return 0;
    p += 2;
    return mp_int(&p, e, ts) && mp_int(&p, e, seq) && mp_int(&p, e, step);
}

static long scan(const unsigned char *buf, long n, long pos,
                 int64_t *counts, int64_t *first, int64_t *last, long nsteps, int64_t now,
                 int64_t *lat, long lat_cap, int64_t *out, int msgpack)
{
    long nlat = 0;
    out[1] = 0;
    while (n - pos >= 2) {
        if (lat && nlat >= lat_cap) {
            out[1] = 3;
            break;
        }
        unsigned b0 = buf[pos], b1 = buf[pos + 1];
        uint64_t len = b1 & 0x7F;
        long hdr = 2;
        if (b1 & 0x80) {
            out[1] = 2;
            break;
        }
        if (len == 126) {
            if (n - pos < 4)
                break;
            len = ((uint64_t)buf[pos + 2] << 8) | buf[pos + 3];
            hdr = 4;
        } else if (len == 127) {
            if (n - pos < 10)
                break;
            len = 0;
            for (int i = 2; i < 10; i++)
                len = (len << 8) | buf[pos + i];
            hdr = 10;
        }
        if (len > (uint64_t)(n - pos - hdr))
            break;
        unsigned op = b0 & 0x0F;
        if (op != 0 && op != 1 && op != 2) {
            out[1] = 1;
            break;
        }
        const unsigned char *s = buf + pos + hdr, *e = s + len, *q = e;
        int64_t ts, seq, step;
        int ok;
        if (msgpack) {
            ok = parse_msgpack_event(s, e, &ts, &seq, &step);
        } else {
            while (q > s && q[-1] != '[')
                q--;
            const unsigned char *p = q;
            ok = q > s + 1 && parse_int(p, e, &p, &ts) && parse_int(p, e, &p, &seq)
                 && parse_int(p, e, &p, &step);
        }
        if (!ok || step < 0 || step >= nsteps) {
            out[1] = 1; /* not an event: the caller's */
            break;
        }
        if (counts[step] == 0)
            first[step] = now;
        counts[step]++;
        last[step] = now;
        if (lat && nlat < lat_cap) {
            lat[2 * nlat] = step;
            lat[2 * nlat + 1] = now - ts;
            nlat++;
        }
        pos += hdr + (long)len;
    }
    out[0] = nlat;
    return pos;
}

long ws_scan(const unsigned char *buf, long n, long pos,
             int64_t *counts, int64_t *first, int64_t *last, long nsteps, int64_t now,
             int64_t *lat, long lat_cap, int64_t *out)
{
    return scan(buf, n, pos, counts, first, last, nsteps, now, lat, lat_cap, out, 0);
}

long ws_scan_msgpack(const unsigned char *buf, long n, long pos,
                     int64_t *counts, int64_t *first, int64_t *last, long nsteps, int64_t now,
                     int64_t *lat, long lat_cap, int64_t *out)
{
    return scan(buf, n, pos, counts, first, last, nsteps, now, lat, lat_cap, out, 1);
}
