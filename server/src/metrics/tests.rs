use super::hsm_finding;
use super::scrape::classic_text;

#[test]
fn hsm_findings_are_the_four_kinds_of_service_hsm() {
    assert_eq!(
        hsm_finding("HSM", "HSM_CHAIN_BREAK"),
        Some("HSM_CHAIN_BREAK")
    );
    assert_eq!(
        hsm_finding("HSM", "HSM_COUNTER_RESET"),
        Some("HSM_COUNTER_RESET")
    );
    assert_eq!(hsm_finding("HSM", "C_Login"), None);
    assert_eq!(hsm_finding("SIGNSERVER", "HSM_CHAIN_BREAK"), None);
}

#[test]
fn counters_take_their_total_name_in_the_classic_format() {
    let om = "# HELP a_events Events.\n# TYPE a_events counter\na_events_total{x=\"1\"} 3\n\
              # HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n# EOF\n";
    assert_eq!(
        classic_text(om),
        "# HELP a_events_total Events.\n# TYPE a_events_total counter\n\
         a_events_total{x=\"1\"} 3\n# HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n"
    );
}
