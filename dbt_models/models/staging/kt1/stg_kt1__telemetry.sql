-- One row per kt1 telemetry report: copies from redelivered batches removed by the report's
-- identity (origin.id, date). Device counters stay raw (see the YAML): they are the tracker's
-- counters, not the vehicle's odometer.
{{ daily_table('day') }}

with source as (
    {{ lake_source('kt1', 'telemetry', {
        'batch_id': 'varchar',
        'item_index': 'integer',
        'fetched_at': 'timestamptz',
        'landed_at': 'timestamptz',
        'origin_id': 'varchar',
        'origin_name': 'varchar',
        'asset_id': 'varchar',
        'asset_name': 'varchar',
        'date': 'timestamptz',
        'received': 'timestamptz',
        'active': 'boolean',
        'lat': 'double',
        'lon': 'double',
        'speed': 'double',
        'altitude': 'double',
        'heading': 'double',
        'accuracy': 'double',
        'address': 'varchar',
        'counters_odometer': 'double',
        'counters_odo_counter': 'double',
        'counters_engine_hours': 'double',
        'day': 'date',
    }) }}
),

typed as (
    select
        md5('kt1|' || origin_id || '|' || cast(epoch_us(cast(date as timestamptz)) as varchar))
            as telemetry_id,
        origin_id,
        origin_name,
        asset_id,
        asset_name,
        cast(date as timestamptz) as recorded_at,
        cast(received as timestamptz) as received_at,
        active as is_active,
        lat,
        lon,
        speed as speed_kmh,
        altitude,
        heading as heading_deg,
        accuracy as gps_accuracy,
        address,
        counters_odometer as device_odometer_counter_m,
        counters_odo_counter as device_distance_counter_m,
        counters_engine_hours as device_engine_hours,
        {{ kt1_landing_columns() }}
    from source
),

final as (
    {{ latest_landing('typed', 'origin_id, recorded_at') }}
)

select * from final
