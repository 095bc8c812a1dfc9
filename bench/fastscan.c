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

long ws_scan(const unsigned char *buf, long n, long pos,
             int64_t *counts, int64_t *first, int64_t *last, long nsteps, int64_t now,
             int64_t *lat, long lat_cap, int64_t *out)
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
        while (q > s && q[-1] != '[')
            q--;
        int64_t ts, seq, step;
        const unsigned char *p = q;
        if (q <= s + 1 || !parse_int(p, e, &p, &ts) || !parse_int(p, e, &p, &seq)
            || !parse_int(p, e, &p, &step) || step < 0 || step >= nsteps) {
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
