pub mod verifylog;
