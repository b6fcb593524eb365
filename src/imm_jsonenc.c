/*
 * imm_jsonenc.c - number text and string escaping for the JSON encoder;
 * see imm_jsonenc.h.
 *
 * The shortest round-trip digits come from the C library rather than from
 * an algorithm of our own (Ryu, Grisu): glibc's printf and strtod are
 * correctly rounded, so "%.{p}e" gives the closest decimal of p+1 digits,
 * and strtod tells whether it reads back as the same double. printf runs
 * once, for 17 digits (which always read back); shorter candidates are
 * rounded from those, and shortest_digits explains why trying 15 and 16
 * digits is enough for a normal double. Integers below 2^53 skip all this.
 *
 * Locale: printf writes the locale's decimal separator, so only the digits
 * and the exponent are taken from its text; what strtod reads is built here
 * as "DIGITSe-N", without a separator, which every locale parses alike.
 */
#include "imm_jsonenc.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The most significant digits a double ever needs (17) plus slack. */
#define MAX_DIGITS 24

/* The digits of x > 0 rounded to p+1 significant digits, and the decimal
 * exponent of the first: x ~ d.ddd * 10^exp10. Returns the digit count. */
static int nearest_digits(double x, int p, char *dig, int *exp10) {
    char tmp[64];
    int n = snprintf(tmp, sizeof tmp, "%.*e", p, x);
    int i, k = 0, e = 0, neg = 0;
    if (n < 0 || (size_t)n >= sizeof tmp)
        n = (int)strlen(tmp); /* cannot happen for p <= 16 */
    for (i = 0; i < n && tmp[i] != 'e' && tmp[i] != 'E'; i++)
        if (tmp[i] >= '0' && tmp[i] <= '9' && k < MAX_DIGITS)
            dig[k++] = tmp[i];
    if (i < n)
        i++;
    if (i < n && (tmp[i] == '-' || tmp[i] == '+'))
        neg = tmp[i++] == '-';
    for (; i < n && tmp[i] >= '0' && tmp[i] <= '9'; i++)
        e = e * 10 + (tmp[i] - '0');
    *exp10 = neg ? -e : e;
    return k;
}

/* The double that `dig` (k digits) * 10^(exp10 - k + 1) reads back as. */
static double read_back(const char *dig, int k, int exp10) {
    char s[MAX_DIGITS + 16];
    memcpy(s, dig, (size_t)k);
    snprintf(s + k, sizeof s - (size_t)k, "e%d", exp10 - (k - 1));
    return strtod(s, NULL);
}

/* Adds one unit in the last place of `dig`; returns the new count (a carry
 * out of the first digit leaves "1" and raises *exp10). */
static int round_up(char *dig, int k, int *exp10) {
    int i = k - 1;
    while (i >= 0 && dig[i] == '9')
        dig[i--] = '0';
    if (i >= 0) {
        dig[i]++;
        return k;
    }
    dig[0] = '1';
    (*exp10)++;
    return 1;
}

/* The p+1 leading digits of x, rounded to nearest, from d17 (x's 17
 * correctly rounded digits, exponent e17): decimal rounding of d17 is the
 * rounding of x itself except on an exact tie in d17 (a tail of 5 and then
 * zeros, where x may lie on either side), which asks printf again. */
static int rounded_digits(double x, const char *d17, int e17, int p, char *dig, int *exp10) {
    int m = p + 1, i;
    if (m >= 17) {
        memcpy(dig, d17, 17);
        *exp10 = e17;
        return 17;
    }
    memcpy(dig, d17, (size_t)m);
    *exp10 = e17;
    if (d17[m] < '5')
        return m;
    if (d17[m] == '5') {
        for (i = m + 1; i < 17 && d17[i] == '0'; i++) {
        }
        if (i == 17)
            return nearest_digits(x, p, dig, exp10);
    }
    return round_up(dig, m, exp10);
}

/* The shortest digits of x > 0 that read back as x, the closest of them
 * when several are as short. Returns the digit count, trailing zeros
 * removed. */
static int shortest_digits(double x, char *dig, int *exp10) {
    char d17[MAX_DIGITS];
    int lo = 0, hi = 16, k, e, e17, mant_exp;
    if (x < 9007199254740992.0 && x == (double)(long long)x) {
        /* an integer below 2^53 reads back only as itself */
        char tmp[IMM_JSONENC_NUMBER_MAX];
        k = imm_json_integer_text((long long)x, tmp);
        memcpy(dig, tmp, (size_t)k);
        *exp10 = k - 1;
        goto done;
    }
    /* A power of two has a gap below it half as wide as the one above, so
     * the nearest decimal of some length may fall out of the narrow lower
     * gap while the one above it, farther away, still reads back: JavaScript
     * takes that shorter text (2^-44 is 5.684341886080802e-14). Whether a
     * length works is then no longer monotone in the nearest decimal, so
     * these few values are scanned length by length, trying both
     * neighbours. DBL_MIN's neighbours are equally far. */
    if (frexp(x, &mant_exp) == 0.5 && x != DBL_MIN) {
        for (lo = 0; lo < 16; lo++) {
            k = nearest_digits(x, lo, dig, exp10);
            e = *exp10;
            if (read_back(dig, k, e) == x)
                break;
            if (read_back(dig, k, e) < x) {
                k = round_up(dig, k, exp10);
                if (read_back(dig, k, *exp10) == x)
                    goto done;
            }
        }
        k = nearest_digits(x, lo, dig, exp10);
        goto done;
    }
    /* one printf for 17 digits; shorter candidates are rounded from them */
    if (nearest_digits(x, 16, d17, &e17) != 17)
        return nearest_digits(x, 16, dig, exp10); /* cannot happen */
    if (x >= DBL_MIN) {
        /* A normal double is closer than 2^-53 (relative) to every decimal
         * that reads back as it, and decimals of up to 15 digits are at
         * least 1e-15 apart: so if one of them reads back, it is x rounded
         * to 15 digits, trailing zeros dropped. Otherwise 16 digits, the
         * nearest, or 17. At most three strtod calls. */
        for (lo = 14; lo < 16; lo++) {
            k = rounded_digits(x, d17, e17, lo, dig, exp10);
            if (read_back(dig, k, *exp10) == x)
                goto done;
        }
        memcpy(dig, d17, 17);
        *exp10 = e17;
        k = 17;
        goto done;
    }
    /* subnormals have fewer bits, so shorter texts can read back */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        k = rounded_digits(x, d17, e17, mid, dig, &e);
        if (read_back(dig, k, e) == x)
            hi = mid;
        else
            lo = mid + 1;
    }
    k = rounded_digits(x, d17, e17, lo, dig, exp10);
done:
    while (k > 1 && dig[k - 1] == '0')
        k--;
    return k;
}

static char *put_zeros(char *p, int n) {
    while (n-- > 0)
        *p++ = '0';
    return p;
}

int imm_json_number_text(double x, char *out) {
    char dig[MAX_DIGITS], *p = out;
    int k, n, e;
    if (isnan(x) || isinf(x)) {
        out[0] = '\0';
        return -1;
    }
    if (x == 0) { /* -0 too, as JavaScript writes it */
        out[0] = '0';
        out[1] = '\0';
        return 1;
    }
    if (x < 0) {
        *p++ = '-';
        x = -x;
    }
    k = shortest_digits(x, dig, &e);
    n = e + 1; /* x = 0.DIGITS * 10^n, ECMAScript's n */
    if (k <= n && n <= 21) {
        memcpy(p, dig, (size_t)k);
        p = put_zeros(p + k, n - k);
    } else if (0 < n && n <= 21) {
        memcpy(p, dig, (size_t)n);
        p += n;
        *p++ = '.';
        memcpy(p, dig + n, (size_t)(k - n));
        p += k - n;
    } else if (-6 < n && n <= 0) {
        *p++ = '0';
        *p++ = '.';
        p = put_zeros(p, -n);
        memcpy(p, dig, (size_t)k);
        p += k;
    } else {
        *p++ = dig[0];
        if (k > 1) {
            *p++ = '.';
            memcpy(p, dig + 1, (size_t)(k - 1));
            p += k - 1;
        }
        p += snprintf(p, 8, "e%c%d", n - 1 >= 0 ? '+' : '-', abs(n - 1));
    }
    *p = '\0';
    return (int)(p - out);
}

int imm_json_integer_text(long long v, char *out) {
    char tmp[24];
    int n = 0, len = 0;
    /* through unsigned, so LLONG_MIN's magnitude does not overflow */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u != 0);
    if (v < 0)
        out[len++] = '-';
    while (n > 0)
        out[len++] = tmp[--n];
    out[len] = '\0';
    return len;
}

/* The length of the valid UTF-8 sequence at s[0] (at most n bytes), or 0.
 * The ranges are RFC 3629's: no overlong forms, no surrogates. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t len, i;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

int imm_json_utf8_valid(const char *s, size_t n, size_t *bad_at) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, len;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        len = utf8_seq(u + i, n - i);
        if (len == 0) {
            if (bad_at != NULL)
                *bad_at = i;
            return 0;
        }
        i += len;
    }
    return 1;
}

int imm_json_add_string(imm_buf *b, const char *s, size_t n, size_t *bad_at) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0, len;
    /* one reservation for the common case of nothing to escape */
    if (imm_buf_reserve(b, n + 2) != 0 || imm_buf_addc(b, '"') != 0)
        return IMM_JSONENC_ENOMEM;
    while (i < n) {
        unsigned char c = u[i];
        char esc[6];
        size_t elen = 2;
        if (c >= 0x80) {
            len = utf8_seq(u + i, n - i);
            if (len == 0) {
                if (bad_at != NULL)
                    *bad_at = i;
                return IMM_JSONENC_EUTF8;
            }
            i += len;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        /* flush the plain bytes before this one, then its escape */
        if (imm_buf_add(b, s + run, i - run) != 0)
            return IMM_JSONENC_ENOMEM;
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        if (imm_buf_add(b, esc, elen) != 0)
            return IMM_JSONENC_ENOMEM;
        run = ++i;
    }
    if (imm_buf_add(b, s + run, n - run) != 0 || imm_buf_addc(b, '"') != 0)
        return IMM_JSONENC_ENOMEM;
    return IMM_JSONENC_OK;
}
