/*
 * libFuzzer target: the lazy CA file reader (src/imm_castore.c) on arbitrary
 * text: splitting PEM blocks, base64, walking each certificate's DER to its
 * subject, and the lookup a handshake makes, by the subject of every
 * certificate the text yields and by a name cut from the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "imm_castore.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    imm_castore *s = imm_castore_parse("fuzz", (const char *)data, size);
    size_t certs = 0, parsed = 0, i;
    if (s == NULL)
        return 0;
    imm_castore_counts(s, &certs, &parsed);
    if (certs == 0 || parsed != 0)
        abort(); /* a store has a certificate, and nothing is parsed before a lookup */
    /* a name from the input itself: any bytes, DER or not */
    for (i = 0; i + 1 < size && i < 64; i += 16) {
        X509 *x = imm_castore_find(s, data + i, size - i);
        if (x != NULL) {
            /* what the lookup returns has the name asked for */
            const unsigned char *p = data + i;
            X509_NAME *nm = d2i_X509_NAME(NULL, &p, (long)(size - i));
            if (nm == NULL || X509_NAME_cmp(X509_get_subject_name(x), nm) != 0)
                abort();
            X509_NAME_free(nm);
            X509_free(x);
        }
    }
    imm_castore_counts(s, &certs, &parsed);
    if (parsed > certs)
        abort();
    imm_castore_release(s);
    return 0;
}
