//! LLRP type numbers this client uses (LLRP 1.1, sections 16 and 17),
//! in one place so the encoder and decoder cannot disagree.

// Messages, client to reader.
pub const GET_READER_CAPABILITIES: u16 = 1;
pub const SET_READER_CONFIG: u16 = 3;
pub const CLOSE_CONNECTION: u16 = 14;
pub const ADD_ROSPEC: u16 = 20;
pub const DELETE_ROSPEC: u16 = 21;
pub const START_ROSPEC: u16 = 22;
pub const STOP_ROSPEC: u16 = 23;
pub const ENABLE_ROSPEC: u16 = 24;
pub const KEEPALIVE_ACK: u16 = 72;
pub const CUSTOM_MESSAGE: u16 = 1023;

// Messages, reader to client.
pub const CLOSE_CONNECTION_RESPONSE: u16 = 4;
pub const GET_READER_CAPABILITIES_RESPONSE: u16 = 11;
pub const GET_READER_CONFIG_RESPONSE: u16 = 12;
pub const SET_READER_CONFIG_RESPONSE: u16 = 13;
pub const ADD_ROSPEC_RESPONSE: u16 = 30;
pub const DELETE_ROSPEC_RESPONSE: u16 = 31;
pub const START_ROSPEC_RESPONSE: u16 = 32;
pub const STOP_ROSPEC_RESPONSE: u16 = 33;
pub const ENABLE_ROSPEC_RESPONSE: u16 = 34;
pub const DISABLE_ROSPEC_RESPONSE: u16 = 35;
pub const RO_ACCESS_REPORT: u16 = 61;
pub const KEEPALIVE: u16 = 62;
pub const READER_EVENT_NOTIFICATION: u16 = 63;
pub const ERROR_MESSAGE: u16 = 100;

/// Whether a reader message type is an answer carrying `LLRPStatus`.
pub fn is_response(t: u16) -> bool {
    matches!(
        t,
        CLOSE_CONNECTION_RESPONSE
            | GET_READER_CONFIG_RESPONSE
            | SET_READER_CONFIG_RESPONSE
            | ADD_ROSPEC_RESPONSE..=36
            | 50..=56 // AccessSpec responses
            | ERROR_MESSAGE
    )
}

/// The response type answering a request type (`ERROR_MESSAGE` may answer
/// any). LLRP numbers most responses request + 10.
pub fn response_to(request: u16) -> u16 {
    match request {
        CLOSE_CONNECTION => CLOSE_CONNECTION_RESPONSE,
        CUSTOM_MESSAGE => CUSTOM_MESSAGE,
        r => r + 10,
    }
}

// TLV parameters.
pub const P_UTC_TIMESTAMP: u16 = 128;
pub const P_UPTIME: u16 = 129;
pub const P_GENERAL_DEVICE_CAPABILITIES: u16 = 137;
pub const P_REGULATORY_CAPABILITIES: u16 = 143;
pub const P_UHF_BAND_CAPABILITIES: u16 = 144;
pub const P_TRANSMIT_POWER_LEVEL: u16 = 145;
pub const P_ROSPEC: u16 = 177;
pub const P_RO_BOUNDARY_SPEC: u16 = 178;
pub const P_ROSPEC_START_TRIGGER: u16 = 179;
pub const P_ROSPEC_STOP_TRIGGER: u16 = 182;
pub const P_AISPEC: u16 = 183;
pub const P_AISPEC_STOP_TRIGGER: u16 = 184;
pub const P_INVENTORY_PARAMETER_SPEC: u16 = 186;
pub const P_KEEPALIVE_SPEC: u16 = 220;
pub const P_ANTENNA_CONFIGURATION: u16 = 222;
pub const P_RF_TRANSMITTER: u16 = 224;
pub const P_RO_REPORT_SPEC: u16 = 237;
pub const P_TAG_REPORT_CONTENT_SELECTOR: u16 = 238;
pub const P_TAG_REPORT_DATA: u16 = 240;
pub const P_EPC_DATA: u16 = 241;
pub const P_READER_EVENT_NOTIFICATION_SPEC: u16 = 244;
pub const P_EVENT_NOTIFICATION_STATE: u16 = 245;
pub const P_READER_EVENT_NOTIFICATION_DATA: u16 = 246;
pub const P_GPI_EVENT: u16 = 248;
pub const P_ROSPEC_EVENT: u16 = 249;
pub const P_READER_EXCEPTION_EVENT: u16 = 252;
pub const P_ANTENNA_EVENT: u16 = 255;
pub const P_CONNECTION_ATTEMPT_EVENT: u16 = 256;
pub const P_CONNECTION_CLOSE_EVENT: u16 = 257;
pub const P_LLRP_STATUS: u16 = 287;
pub const P_C1G2_INVENTORY_COMMAND: u16 = 330;
pub const P_C1G2_RF_CONTROL: u16 = 335;
pub const P_C1G2_SINGULATION_CONTROL: u16 = 336;

// TV parameters.
pub const TV_ANTENNA_ID: u8 = 1;
pub const TV_FIRST_SEEN_UTC: u8 = 2;
pub const TV_LAST_SEEN_UTC: u8 = 4;
pub const TV_PEAK_RSSI: u8 = 6;
pub const TV_CHANNEL_INDEX: u8 = 7;
pub const TV_TAG_SEEN_COUNT: u8 = 8;
pub const TV_ROSPEC_ID: u8 = 9;
pub const TV_EPC96: u8 = 13;

// Event types of `EventNotificationState` (LLRP 1.1 section 16.2.7.4).
pub const EVENT_GPI: u16 = 1;
pub const EVENT_ROSPEC: u16 = 2;
pub const EVENT_READER_EXCEPTION: u16 = 4;
pub const EVENT_ANTENNA: u16 = 8;

/// IANA enterprise number of Impinj, the vendor id of its extensions.
pub const VENDOR_IMPINJ: u32 = 25882;
/// `IMPINJ_ENABLE_EXTENSIONS` custom message subtype (its response is 22).
pub const IMPINJ_ENABLE_EXTENSIONS: u8 = 21;
/// `ImpinjInventorySearchMode` custom parameter subtype.
pub const IMPINJ_SEARCH_MODE: u32 = 23;
