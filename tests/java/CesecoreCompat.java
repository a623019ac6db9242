/*
 * CesecoreCompat: an INDEPENDENT reimplementation of CESeCore's audit-log formats, written for
 * auditseal's tests from /work/shared/spec/cesecore-compat.md (sections 2, 3 and 5). It is not
 * CESeCore code. It uses only the JDK (JCA Signature/Mac, java.beans.XMLEncoder/XMLDecoder), so
 * the Rust implementation is checked against something other than itself.
 *
 * Usage (all text UTF-8; "hex" = lower-case hex of UTF-8 bytes; "-" = null):
 *   protect (--hmac SECRETHEX | --sign PKCS8DER_FILE --alg SHA256WithRSA|SHA256WithECDSA) --keyid N
 *       stdin: lines of 13 tab-separated hex fields; stdout: one rowProtection per line
 *   verify (--hmac SECRETHEX | --pubkey PEM_FILE) [--keyid N]
 *       stdin: 13 hex fields + the rowProtection as plain text; stdout: "OK" or "FAIL <reason>"
 *       exit 0 all OK, 1 any FAIL, 2 usage/IO error
 *   xml-encode [--linked]   stdin: map description; stdout: XMLEncoder output
 *   xml-decode              stdin: XMLEncoder XML;   stdout: map description
 * The map description ("spec") format is documented in tests/src/java.rs. XMLDecoder runs
 * arbitrary constructors named in its input: only feed it XML produced by the tests themselves.
 */

import java.beans.XMLDecoder;
import java.beans.XMLEncoder;
import java.io.BufferedReader;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.MessageDigest;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.security.Signature;
import java.security.SignatureException;
import java.security.spec.PKCS8EncodedKeySpec;
import java.security.spec.X509EncodedKeySpec;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Date;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import org.cesecore.util.Base64PutHashMap;

public class CesecoreCompat {
    static final String SEP = "<sep/>";
    static final HexFormat HEX = HexFormat.of();
    static final PrintStream OUT = new PrintStream(System.out, false, StandardCharsets.UTF_8);

    /** Usage, input-format and I/O errors: exit status 2. */
    static final class UsageError extends Exception {
        private static final long serialVersionUID = 1L;

        UsageError(String msg) { super(msg); }
    }

    public static void main(String[] args) {
        int status;
        try {
            if (args.length == 0) throw new UsageError("usage: protect|verify|xml-encode|xml-decode ...");
            Map<String, String> opts = parseOptions(args);
            switch (args[0]) {
                case "protect": status = protect(opts); break;
                case "verify": status = verify(opts); break;
                case "xml-encode": status = xmlEncode(opts); break;
                case "xml-decode": status = xmlDecode(opts); break;
                default: throw new UsageError("unknown command: " + args[0]);
            }
        } catch (UsageError e) {
            System.err.println("error: " + e.getMessage());
            status = 2;
        } catch (Exception e) {
            System.err.println("error: " + e);
            status = 2;
        }
        OUT.flush();
        System.exit(status);
    }

    /** "--flag value" pairs after the command; "--linked" and "--nested-b64-check" take no value. */
    static Map<String, String> parseOptions(String[] args) throws UsageError {
        Map<String, String> opts = new LinkedHashMap<>();
        for (int i = 1; i < args.length; i++) {
            String a = args[i];
            if (a.equals("--linked") || a.equals("--nested-b64-check")) {
                opts.put(a, "");
            } else if (a.startsWith("--") && i + 1 < args.length) {
                opts.put(a, args[++i]);
            } else {
                throw new UsageError("bad argument: " + a);
            }
        }
        return opts;
    }

    static String need(Map<String, String> opts, String name) throws UsageError {
        String v = opts.get(name);
        if (v == null) throw new UsageError("missing " + name);
        return v;
    }

    static List<String> readLines() throws IOException {
        BufferedReader r = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        List<String> lines = new ArrayList<>();
        for (String l; (l = r.readLine()) != null; ) {
            if (!l.isEmpty()) lines.add(l);
        }
        return lines;
    }

    static String unhex(String field) throws UsageError {
        if (field.equals("-")) return null;
        try {
            return new String(HEX.parseHex(field), StandardCharsets.UTF_8);
        } catch (IllegalArgumentException e) {
            throw new UsageError("bad hex field: " + field);
        }
    }

    // ---- Section 2: the protect string -------------------------------------------------------

    /** Builds the protect string from the first 13 fields of a row line (section 2). */
    static String protectString(String[] fields) throws UsageError {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < 13; i++) {
            String v = unhex(fields[i]);
            if (v != null && (i == 2 || i == 3)) {
                // sequenceNumber and timeStamp are Longs in CESeCore, rendered as plain decimal:
                // insist on that canonical form rather than silently re-rendering.
                boolean canonical;
                try {
                    canonical = Long.toString(Long.parseLong(v)).equals(v);
                } catch (NumberFormatException e) {
                    canonical = false;
                }
                if (!canonical) throw new UsageError("field " + i + " is not a plain decimal long: '" + v + "'");
            }
            if (i > 0) sb.append(SEP);
            if (v != null) sb.append(v);
        }
        return sb.toString();
    }

    static String[] splitRow(String line, int n) throws UsageError {
        String[] f = line.split("\t", -1);
        if (f.length != n) throw new UsageError("expected " + n + " fields, got " + f.length);
        return f;
    }

    // ---- Section 3: rowProtection -------------------------------------------------------------

    static Mac hmac(String secretHex) throws Exception {
        byte[] secret;
        try {
            secret = HEX.parseHex(secretHex);
        } catch (IllegalArgumentException e) {
            throw new UsageError("bad --hmac hex");
        }
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(secret, "HmacSHA256"));
        return mac;
    }

    static int protect(Map<String, String> opts) throws Exception {
        int keyid = Integer.parseInt(need(opts, "--keyid"));
        Mac mac = null;
        Signature sig = null;
        if (opts.containsKey("--hmac")) {
            mac = hmac(opts.get("--hmac"));
        } else {
            byte[] der = Files.readAllBytes(Path.of(need(opts, "--sign")));
            String alg = need(opts, "--alg");
            String keyAlg = alg.toUpperCase().endsWith("WITHRSA") ? "RSA"
                    : alg.toUpperCase().endsWith("WITHECDSA") ? "EC" : null;
            if (keyAlg == null) throw new UsageError("unsupported --alg " + alg);
            PrivateKey key = KeyFactory.getInstance(keyAlg).generatePrivate(new PKCS8EncodedKeySpec(der));
            sig = Signature.getInstance(alg);
            sig.initSign(key);
        }
        for (String line : readLines()) {
            byte[] data = protectString(splitRow(line, 13)).getBytes(StandardCharsets.UTF_8);
            byte[] value;
            if (mac != null) {
                value = mac.doFinal(data);
            } else {
                sig.update(data);
                value = sig.sign(); // ECDSA: DER-encoded, as CESeCore stores it
            }
            OUT.print("1:" + (mac != null ? 1 : 2) + ":" + keyid + ":" + HEX.formatHex(value) + "\n");
        }
        return 0;
    }

    static PublicKey readPublicKey(String pemFile) throws Exception {
        String pem = Files.readString(Path.of(pemFile), StandardCharsets.US_ASCII);
        int b = pem.indexOf("-----BEGIN PUBLIC KEY-----");
        int e = pem.indexOf("-----END PUBLIC KEY-----");
        if (b < 0 || e < b) throw new UsageError("no PUBLIC KEY block in " + pemFile);
        String body = pem.substring(b + "-----BEGIN PUBLIC KEY-----".length(), e).replaceAll("\\s", "");
        X509EncodedKeySpec spec = new X509EncodedKeySpec(Base64.getDecoder().decode(body));
        for (String alg : new String[] {"RSA", "EC"}) {
            try {
                return KeyFactory.getInstance(alg).generatePublic(spec);
            } catch (java.security.spec.InvalidKeySpecException ignored) {
                // try the next key type
            }
        }
        throw new UsageError("public key is neither RSA nor EC: " + pemFile);
    }

    static int verify(Map<String, String> opts) throws Exception {
        Mac mac = opts.containsKey("--hmac") ? hmac(opts.get("--hmac")) : null;
        PublicKey pub = mac == null ? readPublicKey(need(opts, "--pubkey")) : null;
        String wantKeyid = opts.get("--keyid"); // optional extension: also check the keyid
        boolean allOk = true;
        for (String line : readLines()) {
            String[] f = splitRow(line, 14);
            byte[] data = protectString(f).getBytes(StandardCharsets.UTF_8);
            String result = verifyOne(f[13].equals("-") ? null : f[13], data, mac, pub, wantKeyid);
            allOk &= result.equals("OK");
            OUT.print(result + "\n");
        }
        return allOk ? 0 : 1;
    }

    static String verifyOne(String rp, byte[] data, Mac mac, PublicKey pub, String wantKeyid) throws Exception {
        if (rp == null) return "FAIL null protection";
        String[] parts = rp.split(":", -1);
        // entityProtectVersion:protectionVersion:keyid:protection. The protection is everything
        // after the last ':'; the keyid is a plain integer, so more than 3 colons is bad layout.
        if (parts.length != 4) return "FAIL bad layout";
        String protection = parts[3];
        byte[] value;
        try {
            Integer.parseInt(parts[0]);
            Integer.parseInt(parts[1]);
            Integer.parseInt(parts[2]);
            value = HEX.parseHex(protection);
        } catch (IllegalArgumentException e) {
            return "FAIL bad layout";
        }
        if (!parts[0].equals("1")) return "FAIL unsupported version";
        if (wantKeyid != null && Integer.parseInt(parts[2]) != Integer.parseInt(wantKeyid)) {
            return "FAIL unknown keyid";
        }
        if (parts[1].equals("1")) {
            if (mac == null) return "FAIL unsupported version"; // no HMAC key configured
            return MessageDigest.isEqual(mac.doFinal(data), value) ? "OK" : "FAIL wrong MAC";
        } else if (parts[1].equals("2")) {
            if (pub == null) return "FAIL unsupported version"; // no public key configured
            Signature sig = Signature.getInstance(pub.getAlgorithm().equals("RSA") ? "SHA256withRSA" : "SHA256withECDSA");
            sig.initVerify(pub);
            sig.update(data);
            try {
                return sig.verify(value) ? "OK" : "FAIL bad signature";
            } catch (SignatureException e) {
                return "FAIL bad signature";
            }
        }
        return "FAIL unsupported version";
    }

    // ---- Section 5: additionalDetails XML ------------------------------------------------------

    /** Reads the map description format (see tests/src/java.rs) line by line. */
    static final class SpecReader {
        final List<String> lines;
        int pos = 0;

        SpecReader(List<String> lines) { this.lines = lines; }

        String next() throws UsageError {
            if (pos >= lines.size()) throw new UsageError("unexpected end of spec");
            return lines.get(pos++);
        }

        /** Reads key/value pairs until "end" into the given map (the "map" line is already read). */
        void readMapBody(Map<Object, Object> m) throws UsageError {
            for (String l; !(l = next()).equals("end"); ) {
                if (!(l.equals("key") || l.startsWith("key "))) throw new UsageError("expected key, got: " + l);
                String key = unhex(l.length() > 4 ? l.substring(4) : "");
                m.put(key, readValue(next()));
            }
        }

        Object readValue(String l) throws UsageError {
            int sp = l.indexOf(' ');
            String tag = sp < 0 ? l : l.substring(0, sp);
            String arg = sp < 0 ? "" : l.substring(sp + 1);
            try {
                switch (tag) {
                    case "null": return null;
                    case "str": return unhex(arg);
                    case "int": return Integer.valueOf(arg);
                    case "long": return Long.valueOf(arg);
                    case "bool":
                        if (!arg.equals("true") && !arg.equals("false")) throw new UsageError("bad bool: " + arg);
                        return Boolean.valueOf(arg);
                    case "double": return Double.valueOf(arg);
                    case "float": return Float.valueOf(arg);
                    case "date": return new Date(Long.parseLong(arg));
                    case "list": {
                        List<Object> list = new ArrayList<>();
                        for (String v; !(v = next()).equals("end"); ) list.add(readValue(v));
                        return list;
                    }
                    case "map": {
                        Map<Object, Object> m = new LinkedHashMap<>();
                        readMapBody(m);
                        return m;
                    }
                    default: throw new UsageError("unknown value line: " + l);
                }
            } catch (NumberFormatException e) {
                throw new UsageError("bad number in: " + l);
            }
        }
    }

    static int xmlEncode(Map<String, String> opts) throws Exception {
        SpecReader in = new SpecReader(readLines());
        if (!in.next().equals("map")) throw new UsageError("spec must start with 'map'");
        Map<Object, Object> top = opts.containsKey("--linked") ? new LinkedHashMap<>() : new Base64PutHashMap();
        in.readMapBody(top);
        if (in.pos != in.lines.size()) throw new UsageError("trailing lines after the top-level map");
        List<Exception> problems = new ArrayList<>();
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        try (XMLEncoder enc = new XMLEncoder(buf)) {
            enc.setExceptionListener(problems::add);
            enc.writeObject(top);
        }
        if (!problems.isEmpty()) throw new UsageError("XMLEncoder: " + problems.get(0));
        System.out.write(buf.toByteArray());
        System.out.flush();
        return 0;
    }

    static int xmlDecode(Map<String, String> opts) throws Exception {
        byte[] xml = System.in.readAllBytes();
        List<Exception> problems = new ArrayList<>();
        Object top;
        try (XMLDecoder dec = new XMLDecoder(new ByteArrayInputStream(xml), null, problems::add)) {
            top = dec.readObject();
        } catch (ArrayIndexOutOfBoundsException e) {
            throw new UsageError(problems.isEmpty() ? "no object in the XML" : "XMLDecoder: " + problems.get(0));
        }
        if (!problems.isEmpty()) throw new UsageError("XMLDecoder: " + problems.get(0));
        if (!(top instanceof Map)) throw new UsageError("top-level object is not a Map: " + top);
        StringBuilder sb = new StringBuilder();
        writeValue(sb, top);
        OUT.print(sb);
        return 0;
    }

    static String hex(String s) {
        return HEX.formatHex(s.getBytes(StandardCharsets.UTF_8));
    }

    static void writeValue(StringBuilder sb, Object v) throws UsageError {
        if (v == null) sb.append("null\n");
        else if (v instanceof String) sb.append("str ").append(hex((String) v)).append('\n');
        else if (v instanceof Integer) sb.append("int ").append(v).append('\n');
        else if (v instanceof Long) sb.append("long ").append(v).append('\n');
        else if (v instanceof Boolean) sb.append("bool ").append(v).append('\n');
        else if (v instanceof Double) sb.append("double ").append(v).append('\n');
        else if (v instanceof Float) sb.append("float ").append(v).append('\n');
        else if (v instanceof Date) sb.append("date ").append(((Date) v).getTime()).append('\n');
        else if (v instanceof List) {
            sb.append("list\n");
            for (Object item : (List<?>) v) writeValue(sb, item);
            sb.append("end\n");
        } else if (v instanceof Map) {
            sb.append("map\n");
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                if (!(e.getKey() instanceof String)) throw new UsageError("map key is not a String: " + e.getKey());
                sb.append("key ").append(hex((String) e.getKey())).append('\n');
                writeValue(sb, e.getValue());
            }
            sb.append("end\n");
        } else {
            throw new UsageError("unsupported value type " + v.getClass().getName());
        }
    }
}
