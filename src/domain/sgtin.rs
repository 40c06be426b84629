//! SGTIN-96 EPC decoding per the GS1 EPC Tag Data Standard.
