/*
 * Test-only stand-in for CESeCore's org.cesecore.util.Base64PutHashMap, written for auditseal's
 * compatibility tests from the rule in /work/shared/spec/cesecore-compat.md section 5 (not copied
 * from CESeCore). The class name must match so java.beans.XMLEncoder/XMLDecoder write and read
 * `<object class="org.cesecore.util.Base64PutHashMap">` exactly as CESeCore does.
 */
package org.cesecore.util;

import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.LinkedHashMap;

public class Base64PutHashMap extends LinkedHashMap<Object, Object> {
    private static final long serialVersionUID = 1L;

    public Base64PutHashMap() {
        super();
    }

    @Override
    public Object put(Object key, Object value) {
        if (value instanceof String) {
            value = toBase64IfNeeded((String) value);
        }
        return super.put(key, value);
    }

    /** Empty, already "B64:"-prefixed or all-printable-ASCII strings are kept; others are base64'd. */
    public static String toBase64IfNeeded(String s) {
        if (s.isEmpty() || s.startsWith("B64:") || isPrintableAscii(s)) {
            return s;
        }
        return "B64:" + Base64.getEncoder().encodeToString(s.getBytes(StandardCharsets.UTF_8));
    }

    private static boolean isPrintableAscii(String s) {
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c < 32 || c > 126) {
                return false;
            }
        }
        return true;
    }
}
