//! Tests on calls cut from a log pkcs11-spy.so (OpenSC 0.26) wrote over SoftHSM2 for
//! pkcs11-tool (`real.log`: init token, login, keygen, sign, a wrong PIN), and on the seed's
//! example of the older inline form.

use super::*;
use crate::{Format, parse_all};

const REAL: &str = include_str!("real.log");

fn ops(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.op.as_str()).collect()
}

fn all_text(records: &[Record]) -> String {
    records
        .iter()
        .map(|r| format!("{r:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn real_output_one_record_per_call() {
    let records = parse_all(REAL.as_bytes(), Format::Pkcs11Spy);
    assert_eq!(
        ops(&records),
        [
            "C_Initialize",
            "C_InitToken",
            "C_OpenSession",
            "C_Login",
            "C_GenerateKeyPair",
            "C_SignInit",
            "C_Sign",
            "C_CloseSession",
            "C_Login",
            "C_Finalize"
        ]
    );
    let first = &records[0];
    assert!(first.new_run);
    assert_eq!(first.counter.as_deref(), Some("1"));
    assert_eq!(first.time.as_deref(), Some("2026-12-03 11:17:43.830"));
    assert_eq!(first.status, Status::Success);
    assert_eq!(first.rv.as_deref(), Some("CKR_OK"));
    // The record spans its lines exactly.
    let text = &REAL[first.offset as usize..first.end as usize];
    assert!(text.starts_with("1: C_Initialize\n"), "{text:?}");
    assert!(text.ends_with("Returned:  0 CKR_OK\n"), "{text:?}");
    assert_eq!(first.line, 5);

    let init_token = &records[1];
    assert_eq!(init_token.details["in.pLabel"], "SPYT");
    assert_eq!(init_token.details["in.pPin"], "[redacted]");

    let open = &records[2];
    // A label of more than four bytes in the short dump form.
    let label = "80: C_FindObjectsInit\n[in] hSession = 0x1\n[in] pTemplate[1]: \n    CKA_LABEL             00007fff327a2a51 / 7\n    73686970 6B6579\n     s h i p  k e y\nReturned:  0 CKR_OK\n";
    let found = parse_all(label.as_bytes(), Format::Pkcs11Spy);
    assert_eq!(found[0].key.as_deref(), Some("shipkey"));
    assert_eq!(open.session.as_deref(), Some("0x1"));
    assert_eq!(open.details["in.flags"], "0x6");

    let keygen = &records[4];
    assert_eq!(keygen.session.as_deref(), Some("0x1"));
    assert_eq!(keygen.key.as_deref(), Some("k1"));
    assert_eq!(keygen.details["in.pMechanism->type"], "CKM_EC_KEY_PAIR_GEN");
    assert_eq!(
        keygen.details["in.pPublicKeyTemplate.CKA_CLASS"],
        "CKO_PUBLIC_KEY"
    );
    assert_eq!(keygen.details["in.pPrivateKeyTemplate.CKA_SIGN"], "True");
    assert_eq!(keygen.details["in.pPrivateKeyTemplate.CKA_ID"], "01");
    assert_eq!(
        keygen.details["in.pPublicKeyTemplate.CKA_EC_PARAMS"],
        "[10 bytes]"
    );
    assert_eq!(keygen.details["out.hPrivateKey"], "0x3");

    assert_eq!(records[5].key.as_deref(), Some("0x2"));
    let sign = &records[6];
    assert_eq!(sign.details["in.pData"], "[6 bytes]");
    assert_eq!(sign.details["out.pSignature"], "[64 bytes]");

    let wrong = &records[8];
    assert!(wrong.new_run);
    assert_eq!(wrong.status, Status::Failure);
    assert_eq!(wrong.rv.as_deref(), Some("CKR_PIN_INCORRECT"));
    assert_eq!(wrong.details["in.userType"], "CKU_USER");
}

#[test]
fn real_output_keeps_no_pin_data_or_signature() {
    let records = parse_all(REAL.as_bytes(), Format::Pkcs11Spy);
    let text = all_text(&records);
    for secret in [
        "87654321",
        "11111111",
        "38 37 36",
        "3837363534333231",
        "hello",
        "68656c6c6f",
        "5630992c",
    ] {
        assert!(!text.to_lowercase().contains(secret), "{secret} in {text}");
    }
}

#[test]
fn a_call_without_its_return_waits_or_ends_void() {
    // Cut in the middle of C_Sign: the agent's scan stops before it...
    let cut = REAL
        .find("Returned:  0 CKR_OK\n\n10: C_CloseSession")
        .unwrap();
    let mut parser = Spy::new();
    let mut got = Vec::new();
    crate::scan(&REAL.as_bytes()[..cut], &mut parser, 0, 1, 100, |mut r| {
        got.append(&mut r);
        Ok(true)
    })
    .unwrap();
    assert_eq!(got.last().unwrap().op, "C_SignInit");
    // ...and a process that died in a call ends it where the next banner starts.
    let died = format!(
        "{}\n*************** OpenSC PKCS#11 spy *****************\n0: C_Initialize\nReturned:  0 CKR_OK\n",
        &REAL[..cut]
    );
    let records = parse_all(died.as_bytes(), Format::Pkcs11Spy);
    let sign = records.iter().find(|r| r.op == "C_Sign").unwrap();
    assert_eq!((sign.status, sign.rv.as_deref()), (Status::Void, None));
    assert_eq!(records.last().unwrap().op, "C_Initialize");
}

/// The example of the seed (docs of rust-hsm): the older inline form.
const SEED: &str = "0: C_Initialize
Returned:  0 CKR_OK

1: C_GetInfo
Info: Manufacturer = SoftHSM                           
Info: Library = Implementation of PKCS11               
Info: Version = 2.6                                    
Returned:  0 CKR_OK

5: C_InitToken(1262138880, 1234, 4, SPY_TEST                        )
Returned:  0 CKR_OK

6: C_OpenSession(1262138880, 6, 0x0, 0x0, &6)
Session: 6
Returned:  0 CKR_OK

7: C_Login(6, 0, 1234, 4)
Returned:  0 CKR_OK

8: C_GenerateKeyPair(6, {CKM_RSA_PKCS_KEY_PAIR_GEN, 0x0, 0}, 
    {Attributes: CKA_TOKEN = TRUE; CKA_PRIVATE = FALSE; CKA_ENCRYPT = TRUE; CKA_VERIFY = TRUE; CKA_MODULUS_BITS = 2048; CKA_PUBLIC_EXPONENT = 65537}, 
    {Attributes: CKA_TOKEN = TRUE; CKA_PRIVATE = TRUE; CKA_SIGN = TRUE; CKA_DECRYPT = TRUE; CKA_VALUE = 0badc0ffee}, 
    &4, &3)
Public Key: 4
Private Key: 3
Returned:  0 CKR_OK

9: C_SetPIN(6, 1234, 4, 9876, 4)
Returned:  0 CKR_OK

10: C_Logout(6)
Returned:  0 CKR_OK

11: C_Finalize(0x0)
Returned:  0 CKR_OK
";

#[test]
fn seed_inline_form() {
    let records = parse_all(SEED.as_bytes(), Format::Pkcs11Spy);
    assert_eq!(
        ops(&records),
        [
            "C_Initialize",
            "C_GetInfo",
            "C_InitToken",
            "C_OpenSession",
            "C_Login",
            "C_GenerateKeyPair",
            "C_SetPIN",
            "C_Logout",
            "C_Finalize"
        ]
    );
    assert!(records.iter().all(|r| r.status == Status::Success));
    assert_eq!(records[3].session.as_deref(), Some("6"));
    assert_eq!(records[4].session.as_deref(), Some("6"));
    assert_eq!(records[4].details["args"][2], "[redacted]");
    assert_eq!(records[2].details["args"][1], "[redacted]");
    let keygen = &records[5];
    assert_eq!(keygen.key.as_deref(), Some("4"));
    let private = keygen.details["args"][3].as_str().unwrap();
    assert!(private.contains("CKA_SIGN = TRUE"), "{private}");
    assert!(private.contains("CKA_VALUE = [redacted]"), "{private}");
    assert_eq!(records[6].details["args"][1], "[redacted]");
    assert_eq!(records[6].details["args"][3], "[redacted]");
    assert_eq!(records[7].session.as_deref(), Some("6"));
    let text = all_text(&records);
    for secret in ["1234", "9876", "0badc0ffee"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[test]
fn secret_attribute_values_are_redacted_in_either_form() {
    // A secret key imported, and read back, in the spy's real layout.
    let log = "3: C_CreateObject
2026-12-03 11:17:44.100
[in] hSession = 0x1
[in] pTemplate[3]: 
    CKA_CLASS             CKO_SECRET_KEY       
    CKA_VALUE             00007ffe4d05ba57 / 16
    00000000  DE AD BE EF 01 02 03 04 05 06 07 08 09 0A 0B 0C  ................
    CKA_LABEL             00007ffe4d05ba60 / 4
    6B657931
     k e y 1
[out] *phObject = 0x9
Returned:  0 CKR_OK

4: C_GetAttributeValue
2026-12-03 11:17:44.101
[in] hSession = 0x1
[in] hObject = 0x9
[out] pTemplate[1]: 
    CKA_VALUE             00007ffe4d05ba57 / 16
    00000000  DE AD BE EF 01 02 03 04 05 06 07 08 09 0A 0B 0C  ................
Returned:  0 CKR_OK
";
    let records = parse_all(log.as_bytes(), Format::Pkcs11Spy);
    assert_eq!(ops(&records), ["C_CreateObject", "C_GetAttributeValue"]);
    assert_eq!(records[0].details["in.pTemplate.CKA_VALUE"], "[redacted]");
    assert_eq!(records[0].key.as_deref(), Some("key1"));
    assert_eq!(records[1].details["out.pTemplate.CKA_VALUE"], "[redacted]");
    assert_eq!(records[1].key.as_deref(), Some("0x9"));
    let text = all_text(&records).to_lowercase();
    assert!(
        !text.contains("deadbeef") && !text.contains("de ad be ef"),
        "{text}"
    );
}
