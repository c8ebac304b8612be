//! Kling's business codes (kling-api.md 11.1): the HTTP status each one travels with, the
//! explanation text used as a default message, and whether a retry can help.
//!
//! HTTP 429 carries both retryable limits (1302, 1303) and permanent account states (1100,
//! 1101, 1102, 1304), so callers must decide by code, never by status alone.

/// Success.
pub const SUCCESS: i64 = 0;
/// Authentication failed (generic).
pub const AUTH_FAILED: i64 = 1000;
/// `Authorization` header empty.
pub const AUTH_EMPTY: i64 = 1001;
/// `Authorization` header invalid.
pub const AUTH_INVALID: i64 = 1002;
/// Token not yet valid (`nbf` in the future).
pub const AUTH_NOT_YET_VALID: i64 = 1003;
/// Token expired (`exp` passed).
pub const AUTH_EXPIRED: i64 = 1004;
/// Account abnormal.
pub const ACCOUNT_ABNORMAL: i64 = 1100;
/// Account in arrears (postpaid).
pub const ACCOUNT_ARREARS: i64 = 1101;
/// Resource pack used up or expired (prepaid).
pub const RESOURCE_EXHAUSTED: i64 = 1102;
/// No access to this API or model.
pub const NO_PERMISSION: i64 = 1103;
/// Invalid request parameters.
pub const PARAMETER_INVALID: i64 = 1200;
/// Invalid parameter; details in `message`.
pub const PARAMETER_ERROR: i64 = 1201;
/// Invalid request method.
pub const METHOD_INVALID: i64 = 1202;
/// Requested resource (e.g. model or task) does not exist.
pub const RESOURCE_NOT_FOUND: i64 = 1203;
/// Platform policy triggered.
pub const PLATFORM_POLICY: i64 = 1300;
/// Content security policy triggered.
pub const CONTENT_POLICY: i64 = 1301;
/// Requests too frequent (rate limit).
pub const RATE_LIMITED: i64 = 1302;
/// Concurrency or QPS over the resource pack limit.
pub const CONCURRENCY: i64 = 1303;
/// IP allow-list policy.
pub const IP_POLICY: i64 = 1304;
/// Internal server error.
pub const SERVER_ERROR: i64 = 5000;
/// Temporarily unavailable (maintenance).
pub const SERVER_UNAVAILABLE: i64 = 5001;
/// Internal timeout (backlog).
pub const SERVER_TIMEOUT: i64 = 5002;

/// Every documented code, in table order.
pub const ALL: [i64; 22] = [
    SUCCESS,
    AUTH_FAILED,
    AUTH_EMPTY,
    AUTH_INVALID,
    AUTH_NOT_YET_VALID,
    AUTH_EXPIRED,
    ACCOUNT_ABNORMAL,
    ACCOUNT_ARREARS,
    RESOURCE_EXHAUSTED,
    NO_PERMISSION,
    PARAMETER_INVALID,
    PARAMETER_ERROR,
    METHOD_INVALID,
    RESOURCE_NOT_FOUND,
    PLATFORM_POLICY,
    CONTENT_POLICY,
    RATE_LIMITED,
    CONCURRENCY,
    IP_POLICY,
    SERVER_ERROR,
    SERVER_UNAVAILABLE,
    SERVER_TIMEOUT,
];

/// The verbatim message of Kling's documented 1303 example.
pub const CONCURRENCY_MESSAGE: &str = "parallel task over resource pack limit";

/// The HTTP status Kling sends with `code`. Undocumented codes map to 500, since an answer
/// the table does not know is a server-side surprise.
pub fn http_status_for(code: i64) -> u16 {
    match code {
        SUCCESS => 200,
        AUTH_FAILED..=AUTH_EXPIRED => 401,
        ACCOUNT_ABNORMAL..=RESOURCE_EXHAUSTED => 429,
        NO_PERMISSION => 403,
        PARAMETER_INVALID | PARAMETER_ERROR => 400,
        METHOD_INVALID | RESOURCE_NOT_FOUND => 404,
        PLATFORM_POLICY | CONTENT_POLICY => 400,
        RATE_LIMITED..=IP_POLICY => 429,
        SERVER_ERROR => 500,
        SERVER_UNAVAILABLE => 503,
        SERVER_TIMEOUT => 504,
        _ => 500,
    }
}

/// Whether waiting and sending again may succeed: rate and concurrency limits and the 5xxx
/// server codes. Callers must still not resend a create after a 5xxx without first looking
/// it up by `external_task_id` (11.1).
pub fn is_retryable(code: i64) -> bool {
    matches!(
        code,
        RATE_LIMITED | CONCURRENCY | SERVER_ERROR | SERVER_UNAVAILABLE | SERVER_TIMEOUT
    )
}

/// Whether the code is fixed by signing a fresh token once (clock skew or expiry).
pub fn is_resign_retryable(code: i64) -> bool {
    matches!(code, AUTH_NOT_YET_VALID | AUTH_EXPIRED)
}

/// Whether the code is documented in 11.1.
pub fn is_known(code: i64) -> bool {
    ALL.contains(&code)
}

/// A default message for the code: the docs' explanation text, the verbatim 1303 message, or
/// a short description where no text is documented.
pub fn default_message(code: i64) -> &'static str {
    match code {
        SUCCESS => "SUCCEED",
        AUTH_FAILED => "Authentication failed",
        AUTH_EMPTY => "Authorization is empty",
        AUTH_INVALID => "Authorization is invalid",
        AUTH_NOT_YET_VALID => "Authorization is not yet valid",
        AUTH_EXPIRED => "Authorization has expired",
        ACCOUNT_ABNORMAL => "Account exception",
        ACCOUNT_ARREARS => "Account in arrears",
        RESOURCE_EXHAUSTED => "Resource pack depleted or expired",
        NO_PERMISSION => "No permission to access this API or model",
        PARAMETER_INVALID => "Invalid request parameters",
        PARAMETER_ERROR => "Invalid parameter",
        METHOD_INVALID => "Invalid request method",
        RESOURCE_NOT_FOUND => "Requested resource does not exist",
        PLATFORM_POLICY => "Platform policy triggered",
        CONTENT_POLICY => "Content security policy triggered",
        RATE_LIMITED => "Requests too frequent",
        CONCURRENCY => CONCURRENCY_MESSAGE,
        IP_POLICY => "IP allow-list policy triggered",
        SERVER_ERROR => "Internal server error",
        SERVER_UNAVAILABLE => "Service temporarily unavailable",
        SERVER_TIMEOUT => "Internal server timeout",
        _ => "Unknown error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_the_table() {
        let expected: [(i64, u16); 22] = [
            (0, 200),
            (1000, 401),
            (1001, 401),
            (1002, 401),
            (1003, 401),
            (1004, 401),
            (1100, 429),
            (1101, 429),
            (1102, 429),
            (1103, 403),
            (1200, 400),
            (1201, 400),
            (1202, 404),
            (1203, 404),
            (1300, 400),
            (1301, 400),
            (1302, 429),
            (1303, 429),
            (1304, 429),
            (5000, 500),
            (5001, 503),
            (5002, 504),
        ];
        for (code, status) in expected {
            assert_eq!(http_status_for(code), status, "code {code}");
            assert!(is_known(code));
        }
        assert_eq!(http_status_for(4242), 500);
        assert!(!is_known(4242));
    }

    #[test]
    fn only_limits_and_server_codes_retry() {
        let retryable: Vec<i64> = ALL.iter().copied().filter(|c| is_retryable(*c)).collect();
        assert_eq!(retryable, vec![1302, 1303, 5000, 5001, 5002]);
        for code in [1100, 1101, 1102, 1304] {
            assert_eq!(http_status_for(code), 429);
            assert!(!is_retryable(code), "429 with {code} is permanent");
        }
        assert!(is_resign_retryable(1003) && is_resign_retryable(1004));
        assert!(!is_resign_retryable(1002));
    }

    #[test]
    fn every_code_has_a_distinct_message() {
        let mut seen = std::collections::HashSet::new();
        for code in ALL {
            assert!(
                seen.insert(default_message(code)),
                "duplicate message for {code}"
            );
        }
        assert_eq!(
            default_message(1303),
            "parallel task over resource pack limit"
        );
    }
}
